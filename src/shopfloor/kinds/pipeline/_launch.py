"""Runs a process service: joins its cgroup, drops to its user, then execs the command.

Started by the worker as `python -I -S _launch.py OPTIONS_JSON ARGV…` in a new session, so
the service is the leader of its own session and process group. It runs as a script (no
package import): it must start fast and touch nothing of the worker's. Joining the cgroup
happens here, before the exec, so that nothing the service forks can escape it; and before
dropping privileges, because only root may write the cgroup.
"""

import json
import os
import sys


def resolve(command: str) -> str:
    """The executable's path, found before privileges are dropped: afterwards this very
    interpreter may no longer read its own standard library (e.g. under a 0700 /root)."""
    if "/" in command:
        return command
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory, command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return command


def main() -> None:
    options = json.loads(sys.argv[1])
    argv = sys.argv[2:]
    executable = resolve(argv[0])
    if options.get("cgroup"):
        with open(os.path.join(options["cgroup"], "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    if options.get("uid") is not None:
        os.setgroups([])
        os.setgid(options["gid"])
        os.setuid(options["uid"])
    try:
        os.execv(executable, argv)
    except OSError as err:
        print(f"shopfloor: cannot run {argv[0]!r}: {err.strerror}", file=sys.stderr, flush=True)
        os._exit(127)


if __name__ == "__main__":
    main()
