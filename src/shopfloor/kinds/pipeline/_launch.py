"""Runs a process service: contains it, drops to its uid, then execs the command.

Started by the worker as `python -I -S _launch.py ARGV…` in a new session, so the service is
the leader of its own session and process group. Its options (JSON) come in the environment
variable SHOPFLOOR_LAUNCH, not on the command line that every user may read; the service's own
environment is among them, so nothing it sets (LD_PRELOAD…) reaches this root process. It runs
as a script (no package import): it must start fast and touch nothing of the worker's. As
root, in order:

- joins the service's cgroups (pids, memory): nothing it forks can leave them, and only root
  may write them;
- a mount namespace of its own, where the worker's secrets are covered by empty root-only
  tmpfs (the data dir, the artifact store, the checkout with its `.env`, /root), /tmp,
  /var/tmp and /dev/shm are small private tmpfs, the Temporal SQLite files read as empty, and
  only the service's own directory is bound back in; and an IPC namespace of its own;
- its uid/gid (leased by the worker from the machine-wide pool: the flock'd lease file stays
  open in the service across the exec, so the uid is its own for as long as it lives, across
  worker restarts), and no_new_privs (no setuid binary gives anything back);
- then a minimal root (`shopfloor.sandbox._contain.RunRoot`, loaded by path): the system
  and interpreter trees read-only, its own directory, its own /tmp and /dev/shm, chroot — no
  other host directory, as for a script's run; an empty capability bounding set and the
  seccomp filter that refuses new namespaces;
- its working directory, entered only now: a cwd taken before the mounts would keep a way
  (`..`) to what they cover.
"""

import dataclasses
import importlib.util
import json
import os
import sys
from types import ModuleType  # (already loaded: no typing import in this small process)


def resolve(command: str, path: str) -> str:
    """The executable's path, found before privileges are dropped: afterwards this very
    interpreter may no longer read its own standard library (e.g. under a 0700 /root)."""
    if "/" in command:
        return command
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory, command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return command


def enter_private_mounts(
    contain: ModuleType, covers: list[list[str]], binds: list[str], files: list[str]
) -> None:
    """`covers`: [path, tmpfs options] in order, outermost first (one already under an earlier
    cover no longer exists there: skipped); `binds`: directories bound back at their path
    (opened before anything covers them), the way to each passable (0711), not listable;
    `files`: covered with /dev/null."""
    contain.unshare(contain.CLONE_NEWNS | contain.CLONE_NEWIPC, "the service's namespaces")
    mount = contain.mount
    mount("none", "/", None, contain.MS_REC | contain.MS_PRIVATE, None)
    # Opened in the new namespace (a bind from another namespace's mount is refused).
    kept = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in binds}
    for path, data in covers:
        if os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", 0, data)
    for path, fd in kept.items():
        contain.make_passage("/", path)
        mount(f"/proc/self/fd/{fd}", path, None, contain.MS_BIND | contain.MS_REC, None)
        os.close(fd)
    for path in files:
        if os.path.isfile(path):
            mount("/dev/null", path, None, contain.MS_BIND, None)


def _load(path: str) -> ModuleType:
    """The sandbox's levers module, by path: a package import would run the package's
    `__init__` (asyncio, the zygotes) in this small root process."""
    spec = importlib.util.spec_from_file_location("shopfloor_contain", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def enter_root(contain: ModuleType, root: dict[str, object], cwd: str) -> None:
    work_root = os.path.dirname(cwd)
    run_root = contain.RunRoot.build(
        trees=root["trees"], hide=[], work_root=work_root, tmp_mb=root["tmp_mb"]
    )
    # No pid namespace of its own (it outlives the worker, found by marker from the host):
    # its /proc shows only what it may trace.
    dataclasses.replace(run_root, hidepid=True).enter(cwd)


def main() -> None:
    options = json.loads(os.environ["SHOPFLOOR_LAUNCH"])
    env = options["env"]
    argv = sys.argv[1:]
    executable = resolve(argv[0], env.get("PATH", os.defpath))
    for cgroup in options.get("cgroups", []):
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    try:
        # Loaded before the mounts, which cover where it lives (the checkout).
        contain = _load(options["contain"])
        if options.get("mounts"):
            mounts = options["mounts"]
            enter_private_mounts(contain, mounts["covers"], mounts["binds"], mounts["files"])
            enter_root(contain, options["root"], options.get("cwd") or "/")
        contain.drop_privileges(
            options.get("uid"), options.get("gid"), last_cap=contain.last_capability()
        )
        if contain.seccomp_available():
            contain.refuse_new_namespaces()
    except OSError as err:
        print(f"shopfloor: cannot contain the service: {err}", file=sys.stderr, flush=True)
        os._exit(126)
    try:
        os.chdir(options.get("cwd") or "/")
    except OSError as err:
        print(f"shopfloor: cannot enter {options.get('cwd')!r}: {err.strerror}", file=sys.stderr)
        os._exit(126)
    try:
        os.execve(executable, argv, env)
    except OSError as err:
        print(f"shopfloor: cannot run {argv[0]!r}: {err.strerror}", file=sys.stderr, flush=True)
        os._exit(127)


if __name__ == "__main__":
    main()
