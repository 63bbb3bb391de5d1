"""The worker's zygotes, shared by every kind that runs user code (`WorkerContext.shared`).

`cold` forks fresh interpreters, so the big, threaded worker never forks itself; `warm` has
imported the heavy libraries the served kinds name (`JobKind.warm_imports`), started with
the environment they declare (`JobKind.warm_environment`), and forks children that start in
milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from shopfloor.registry import JobKind, WorkerContext, load
from shopfloor.sandbox import Zygote, release_cgroup_pool
from shopfloor.usercode._containment import Containment, containment
from shopfloor.usercode._runs import Runs
from shopfloor.usercode._slots import RunSlots

log = logging.getLogger("shopfloor.sandbox")


@dataclass(frozen=True)
class Zygotes:
    cold: Zygote
    warm: Zygote | None  # None when no served kind has heavy imports
    contain: Containment | None = None
    runs: Runs | None = None  # kept for later attempts (None: no adoption)
    handoff_after_s: float = 0.0  # a local attempt's run goes on in an activity after this
    slots: RunSlots | None = None  # None: runs are not counted (outside a worker)


def warm_environment(served: Sequence[JobKind]) -> dict[str, str]:
    """What the served kinds' warm imports read from the environment when the zygote imports
    them (each kind's `warm_environment`, a light "module:function" called here)."""
    env: dict[str, str] = {}
    for kind in served:
        if kind.warm_environment is not None:
            env.update(load(kind.warm_environment)())
    return env


@asynccontextmanager
async def zygotes(ctx: WorkerContext) -> AsyncIterator[Zygotes]:
    contain = containment(ctx.settings)
    log.info("%s", contain.caps.describe())
    for warning in contain.warnings:
        log.warning("sandbox: %s", warning)
    options = contain.zygote_options(ctx.settings)
    try:
        async with AsyncExitStack() as stack:
            cold = await Zygote.start([], options=options)
            stack.push_async_callback(cold.close)
            # In the kinds' order: a `module:function` warm-up runs after what it needs.
            warm_imports = list(dict.fromkeys(m for k in ctx.served for m in k.warm_imports))
            warm = None
            if warm_imports:
                env = warm_environment(ctx.served)
                warm = await Zygote.start(warm_imports, env, options=options)
                stack.push_async_callback(warm.close)
            runs = Runs(ctx.settings.adoption_window_s)
            stack.push_async_callback(runs.close)  # runs nobody adopted: killed and freed
            yield Zygotes(
                cold=cold,
                warm=warm,
                contain=contain,
                runs=runs,
                handoff_after_s=ctx.settings.handoff_after_s,
                slots=RunSlots(ctx.settings, ctx.served),
            )
    finally:
        release_cgroup_pool()  # no more jobs in this process: its cgroups go
        contain.work_root.remove()
