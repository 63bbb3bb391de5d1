"""Worker-side resources for kinds that run user code (scripts, simulation scenes).

One pair of zygotes per worker process, shared by every such kind (`WorkerContext.shared`):
`cold` forks fresh interpreters, so the big, threaded worker never forks itself; `warm` has
imported the heavy libraries the served kinds name (`JobKind.warm_imports`) and forks children
that start in milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from shopfloor.registry import WorkerContext
from shopfloor.sandbox import Zygote


@dataclass(frozen=True)
class Zygotes:
    cold: Zygote
    warm: Zygote | None  # None when no served kind has heavy imports


@asynccontextmanager
async def zygotes(ctx: WorkerContext) -> AsyncIterator[Zygotes]:
    cold = await Zygote.start([])
    try:
        warm_imports = sorted({m for kind in ctx.served for m in kind.warm_imports})
        warm = await Zygote.start(warm_imports) if warm_imports else None
        try:
            yield Zygotes(cold=cold, warm=warm)
        finally:
            if warm is not None:
                await warm.close()
    finally:
        await cold.close()
