"""What containing a run costs per script start, with and without it, in the same run.

Both sides run the same cold script (`print("hi")`) through a cold zygote, the way the
`script` kind's activity does, minus Temporal (whose cost is the same on both sides):

* without: a zygote with the host's view, the job dir a plain temp dir, the run as the
  worker's uid in the host's network, a pids cgroup (as before containment), `out/` stored;
* with: what `UserCodeRun` does now: a uid leased from the pool, a 0700 job dir of that uid
  under the worker's 0711 root, inputs handed over, a zygote in its private mount view with
  the runs' own root, per run: a launch request in a memfd, a pid namespace whose init
  forks the program, new mount, network and IPC namespaces, its own /tmp, /dev/shm and
  /proc, chroot, an empty bounding set, no_new_privs, the seccomp filter, every other fd
  closed; a memory cgroup over the run, the disk cap watched, `out/` collected without
  following links, the uid given back.

The sides alternate job by job so machine noise hits both alike. Printed: p50/p90 per start
on each side, the difference (the containment's cost per start, target ≤ 10 ms) and the
ratio. The warm fork (scripts that import heavy libraries) is measured the same way with a
zygote that imported `json` only. Needs root for the "with" side.

    .venv/bin/python benchmarks/bench_containment.py [--jobs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import fmt_ms, machine_summary, percentile, print_table, ratio

from shopfloor.artifacts import ArtifactStore, LocalArtifactStore
from shopfloor.sandbox import (
    LaunchOptions,
    Limits,
    RunIdentity,
    UidPool,
    WorkRoot,
    Zygote,
    ZygoteOptions,
    give_to,
    remove_run_dir,
)
from shopfloor.sandbox.host import detect
from shopfloor.usercode import UID_LOCK_DIR, cold_python_argv

SCRIPT = 'import os\nprint("hi")\nopen(os.path.join(os.environ["OUT"], "r.txt"), "w").write("x")\n'
LIMITS = Limits(wall_timeout_s=30, memory_mb=512)


class Side:
    def __init__(self, name: str) -> None:
        self.name = name
        self.samples: list[float] = []


async def plain_start(cold: Zygote, store: ArtifactStore, warm: bool) -> None:
    path = Path(tempfile.mkdtemp(prefix="shopfloor-bench-"))
    try:
        (path / "out").mkdir()
        (path / "s.py").write_text(SCRIPT)
        env = {"PATH": "/usr/bin:/bin", "OUT": str(path / "out")}
        options = LaunchOptions(cwd=path, env=env, limits=LIMITS)
        if warm:
            out = await cold.run_script(path / "s.py", [], options)
        else:
            out = await cold.run_exec(cold_python_argv("s.py", []), options, python=True)
        assert out.exit_code == 0 and out.stdout == "hi\n", out
        assert store.collect_tree("bench", path / "out", run_dir=path).uris
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def contained_start(
    cold: Zygote, store: ArtifactStore, root: WorkRoot, pool: UidPool, warm: bool
) -> None:
    lease = pool.acquire()
    path = root.new_run_dir(lease.uid, lease.gid)
    try:
        (path / "s.py").write_text(SCRIPT)
        give_to(path, lease.uid, lease.gid)
        env = {"PATH": "/usr/bin:/bin", "OUT": str(path / "out")}
        options = LaunchOptions(
            cwd=path,
            env=env,
            limits=Limits(**{**LIMITS.__dict__, "disk_mb": 1024}),
            identity=RunIdentity(lease.uid, lease.gid, "none"),
            watch_dir=path,
        )
        if warm:
            out = await cold.run_script(path / "s.py", [], options)
        else:
            out = await cold.run_exec(cold_python_argv("s.py", []), options, python=True)
        assert out.exit_code == 0 and out.stdout == "hi\n", out
        assert store.collect_tree("bench", path / "out", run_dir=path).uris
    finally:
        remove_run_dir(path)
        pool.release(lease)


async def measure(jobs: int, warm: bool) -> tuple[Side, Side]:
    caps = detect()
    if not caps.root:
        raise SystemExit("the contained side needs root (its own uids, namespaces, cgroups)")
    root = WorkRoot(shared_with_runs=True)
    root.create()
    pool = UidPool(200000, 1000, UID_LOCK_DIR)
    modules = ["json"] if warm else []
    mounts = {"work_root": str(root.path), "hide": [], "tmp_mb": 64}
    with tempfile.TemporaryDirectory(prefix="shopfloor-bench-") as store_dir:
        store = LocalArtifactStore(Path(store_dir))
        plain = await Zygote.start(modules)
        options = ZygoteOptions(mounts=mounts, memory_cgroups=caps.memory_cgroup, pidns=caps.pidns)
        contained = await Zygote.start(modules, options=options)
        try:
            without, with_ = Side("without containment"), Side("with containment")
            for i in range(jobs + 5):  # 5 warm-up rounds, not counted
                order = [(without, "p"), (with_, "c")] if i % 2 else [(with_, "c"), (without, "p")]
                for side, kind in order:
                    t0 = time.perf_counter()
                    if kind == "p":
                        await plain_start(plain, store, warm)
                    else:
                        await contained_start(contained, store, root, pool, warm)
                    if i >= 5:
                        side.samples.append(time.perf_counter() - t0)
            return without, with_
        finally:
            await plain.close()
            await contained.close()
            root.remove()


def report(title: str, without: Side, with_: Side) -> float:
    rows = []
    for side in (without, with_):
        s = side.samples
        rows.append([side.name, fmt_ms(percentile(s, 50)), fmt_ms(percentile(s, 90)), str(len(s))])
    cost = percentile(with_.samples, 50) - percentile(without.samples, 50)
    print_table(["side", "p50 / start", "p90 / start", "starts"], rows, title=title)
    print(
        f"containment cost per start (p50 difference): {cost * 1000:.2f} ms "
        f"(ratio {ratio(percentile(with_.samples, 50), percentile(without.samples, 50)):.2f}x); "
        "target ≤ 10 ms"
    )
    return cost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="starts per side and mode")
    args = parser.parse_args()
    print(machine_summary())
    print(detect().describe())
    for warm in (False, True):
        without, with_ = asyncio.run(measure(args.jobs, warm))
        mode = "warm fork (zygote imported json)" if warm else "cold script (fresh interpreter)"
        report(f"script start, {mode}", without, with_)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
