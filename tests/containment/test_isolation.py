"""A run sees nothing of other runs, of the zygote that forked it, or of the host (issue 19,
attacks 3 and 5–9): each attack beside two innocent jobs (`run_with_innocents`), through a
real worker and controller. Every test here failed on the code before per-run namespaces,
the minimal root, closed fds and memfd launch requests (commit ed7f4e1), as its docstring
says.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shopfloor.devserver import DevServer
from tests.containment import test_escapes
from tests.containment.test_escapes import CAPS, run_with_innocents
from tests.helpers import REPO, Stack, wait_until

stack = test_escapes.stack  # a worker (scripts) and a controller, for this module

pytestmark = pytest.mark.skipif(
    not (CAPS.root and CAPS.mountns and CAPS.pidns and CAPS.pids_cgroup),
    reason="per-run namespaces need a root worker: " + CAPS.describe(),
)


def _lines(out: dict) -> list[str]:
    assert out["exit_code"] == 0, out["stderr_tail"]
    return out["stdout_tail"].splitlines()


def test_a_run_holds_no_descriptor_of_the_zygote(stack: Stack) -> None:
    """Attack 3: forks inherited the zygote's epoll fd (fd 5); a readable pipe registered on
    it stalled every later run of the zygote. Before: fds 4–6 were open (epoll, socket, wake
    pipe). Now a run holds 0–2 and its progress pipe (3), nothing else."""
    attack = textwrap.dedent(
        """
        import os, select
        fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        probe = fds.pop()  # listdir's own
        r, w = os.pipe()
        os.write(w, b"x")
        hijacked = []
        for fd in fds:
            try:
                select.epoll.fromfd(os.dup(fd)).register(r, select.EPOLLIN)
                hijacked.append(fd)
            except OSError:
                pass
        print(fds, os.readlink("/proc/self/fd/3").startswith("pipe:"), hijacked)
        """
    )
    out = run_with_innocents(stack, {"source": attack})
    assert _lines(out) == ["[0, 1, 2, 3] True []"]


def test_a_fork_finds_nothing_of_earlier_jobs_in_its_memory(stack: Stack) -> None:
    """Attack 5: warm forks read other jobs' arguments and environment left in the zygote's
    heap by earlier launch requests. Before: the attacker's scan of its own anonymous memory
    found the victim's argument. Now the zygote never reads a request (a memfd only the
    run's child reads)."""
    secret = f"victim-arg-SECRET-{uuid.uuid4().hex}"
    victim = stack.run("script", {"source": "import sys; print(len(sys.argv))", "args": [secret]})
    assert victim["result"]["stdout_tail"] == "2\n"
    attack = textwrap.dedent(
        """
        import ctypes, re, sys
        needle = sys.argv[1].encode()[:18]  # "victim-arg-SECRET-": the prefix, not the value
        pattern = re.escape(needle) + rb"[0-9a-f]{32}"
        found = set()
        for line in open("/proc/self/maps"):
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
            if not fields[1].startswith("rw") or name.startswith(("/", "[v")):
                continue  # anonymous, heap and stack mappings only
            start, end = (int(x, 16) for x in fields[0].split("-"))
            data = ctypes.string_at(start, end - start)
            found |= {m.group() for m in re.finditer(pattern, data)}
        print(sorted(x.decode() for x in found))
        """
    )
    out = run_with_innocents(stack, {"source": attack, "args": ["victim-arg-SECRET-"]})
    assert _lines(out) == ["[]"], "an earlier job's argument is in a fork's memory"


def test_tmp_and_dev_shm_are_private_to_each_run(stack: Stack) -> None:
    """Attack 6: /tmp and /dev/shm were one tmpfs per zygote: a run planted a 0666 file and
    a symlink that the next run followed, and filling them broke its neighbours' writes.
    Before: the victim saw the planted names and its write failed with ENOSPC. Now each run
    has its own, with its own cap."""
    planter = textwrap.dedent(
        """
        import os, time
        for d in ("/tmp", "/dev/shm"):
            with open(os.path.join(d, "planted"), "w") as f:
                f.write("attacker")
            os.chmod(os.path.join(d, "planted"), 0o666)
            os.symlink("/etc/hostname", os.path.join(d, "result.txt"))
            try:
                with open(os.path.join(d, "fill"), "wb") as f:
                    while True:
                        f.write(b"x" * (1 << 20))
            except OSError as err:
                print(d, "full:", err.strerror)
        time.sleep(4)
        """
    )
    victim = textwrap.dedent(
        """
        import os, sys, time
        time.sleep(1.5)  # the planter has filled its /tmp by now
        # What a run's own /tmp holds besides: the way to its own directory, and to the
        # interpreter's trees where they live under /tmp (a checkout there, as in CI).
        own = (os.getcwd(), sys.prefix, os.path.dirname(os.__file__))
        for d in ("/tmp", "/dev/shm"):
            seen = sorted(
                n for n in os.listdir(d) if not any(p.startswith(f"{d}/{n}/") for p in own)
            )
            with open(os.path.join(d, "result.txt"), "w") as f:
                f.write("mine" * 100_000)
            print(d, seen, os.path.getsize(os.path.join(d, "result.txt")))
        """
    )

    victims: list[str] = []

    def with_victim(innocents: list[str], job: dict) -> dict:
        victims.append(stack.submit("script", {"source": victim, "timeout_s": 60}))
        return job

    out = run_with_innocents(stack, {"source": planter}, on_running=with_victim)
    assert _lines(out) == [
        "/tmp full: No space left on device",
        "/dev/shm full: No space left on device",
    ]
    seen = stack.result(victims[0])["result"]
    assert _lines(seen) == ["/tmp [] 400000", "/dev/shm [] 400000"]


def test_no_world_writable_host_directory_is_in_a_runs_view(stack: Stack) -> None:
    """Attack 7: /run/lock (1777, on the host disk) took 54 MB past disk_mb=10 and a later
    job of another uid read it. Before: the walk found /run/lock, /var/tmp and others, and
    the write there landed on the host. Now the only writable directories a run sees are its
    own: its work dir, /tmp and /dev/shm."""
    attack = textwrap.dedent(
        """
        import json, os, stat
        writable = []
        for root, dirs, files in os.walk("/"):
            if root == "/proc":
                dirs[:] = []
                continue
            if os.access(root, os.W_OK):
                writable.append(root)
            mode = os.lstat(root).st_mode
            if mode & stat.S_IWOTH and not root.startswith(os.getcwd()):
                writable.append("world:" + root)
        print(json.dumps(sorted(set(writable))))
        """
    )
    before = set(os.listdir("/run/lock")) if os.path.isdir("/run/lock") else set()
    out = run_with_innocents(stack, {"source": attack})
    found = json.loads(_lines(out)[0])
    own = [p for p in found if not p.startswith("world:")]
    world = sorted(p.removeprefix("world:") for p in found if p.startswith("world:"))
    assert world == ["/dev/shm", "/tmp"], found
    assert all(p in ("/tmp", "/dev/shm") or "/run-" in p for p in own), own
    assert (set(os.listdir("/run/lock")) if os.path.isdir("/run/lock") else set()) == before


@pytest.fixture(scope="module")
def worker_with_dotenv(
    dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Path]]:
    """A worker started where a `.env` with a key lies, as the README's settings file."""
    home = tmp_path_factory.mktemp("checkout")
    (home / ".env").write_text("SHOPFLOOR_ANTHROPIC_API_KEY=sk-from-dotenv-SECRET\n")
    s = Stack(temporal_address=dev_server.address, tmp=tmp_path_factory.mktemp("dotenv"))
    s.start_worker("--kind", "script", cwd=home)
    s.start_controller()
    yield s, home
    s.stop()


def test_the_checkout_and_the_workers_dotenv_are_out_of_sight(
    worker_with_dotenv: tuple[Stack, Path],
) -> None:
    """Attack 8: the `.env` beside the worker (0644) and the whole checkout were readable by
    every run. Before: each read below printed the file's first bytes. Now a run's root holds
    the system trees and the interpreter's own (the venv, the package's source) only."""
    stack, home = worker_with_dotenv
    targets = [
        str(home / ".env"),
        str(REPO / "pyproject.toml"),
        str(REPO / ".git" / "config"),
        str(REPO / "tests" / "helpers.py"),
        "/root/.bashrc",
        "/var/log",
        "/home",
    ]
    attack = textwrap.dedent(
        """
        import os, sys
        for path in sys.argv[1:]:
            try:
                if os.path.isdir(path):
                    print(path, "listed", os.listdir(path)[:3])
                else:
                    print(path, "read", open(path).read(40))
            except OSError as err:
                print(path, type(err).__name__)
        import shopfloor  # the package's source stays importable: runs need none of the rest
        print("package", os.path.dirname(shopfloor.__file__).endswith("src/shopfloor"))
        """
    )
    out = run_with_innocents(stack, {"source": attack, "args": targets})
    lines = _lines(out)
    assert lines[:-1] == [f"{t} FileNotFoundError" for t in targets], lines
    assert lines[-1] == "package True"


def test_host_processes_ipc_and_privileges_are_out_of_reach(stack: Stack) -> None:
    """Attack 9: runs saw the host's processes and command lines (no pid namespace), shared
    SysV IPC with the host and later runs with `network: host` (a 32 MB segment outlived its
    job and was read by a later one), and had NoNewPrivs 0, a full bounding set, and user
    namespaces. Before: the planted segment was found, and every line below differed."""
    plant = textwrap.dedent(
        """
        import ctypes, sys
        libc = ctypes.CDLL(None, use_errno=True)
        shmid = libc.shmget(0x5F0F, 32 << 20, 0o1666)  # IPC_CREAT | 0666
        print("planted", shmid >= 0)
        """
    )
    planted = stack.run("script", {"source": plant, "network": "host"})["result"]
    assert _lines(planted) == ["planted True"]
    attack = textwrap.dedent(
        """
        import ctypes, os, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        print("segment", libc.shmget(0x5F0F, 0, 0) >= 0)
        print("processes", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        status = dict(l.split(":", 1) for l in open("/proc/self/status"))
        print("nnp", status["NoNewPrivs"].strip(), "bounding", status["CapBnd"].strip())
        print("seccomp", status["Seccomp"].strip())
        for argv in (["unshare", "-U", "true"], ["unshare", "-n", "true"]):
            done = subprocess.run(argv, capture_output=True, text=True)
            print(argv[1], done.returncode, done.stderr.strip().split(": ")[-1])
        """
    )
    out = run_with_innocents(stack, {"source": attack, "network": "host"})
    assert _lines(out) == [
        "segment False",
        "processes [1, 2]",
        "nnp 1 bounding 0000000000000000",
        "seccomp 2",
        "-U 1 Operation not permitted",
        "-n 1 Operation not permitted",
    ]


def test_runs_of_one_zygote_at_once_each_see_only_themselves(stack: Stack) -> None:
    """Four runs at once: each sees its own processes and its own directory, none another's
    (pid namespaces and per-run roots, under load)."""
    look = textwrap.dedent(
        """
        import os, time
        time.sleep(1)
        print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), os.getcwd())
        """
    )
    ids = [stack.submit("script", {"source": look}) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = [r["result"] for r in pool.map(stack.result, ids)]
    dirs = set()
    for res in results:
        procs, _, cwd = _lines(res)[0].partition("] ")
        assert procs == "[1, 2", res
        dirs.add(cwd)
    assert len(dirs) == 4, dirs


@pytest.fixture
def outside_host() -> Iterator[tuple[str, int]]:
    """A host beyond the worker, as the internet would be: a network namespace of the test's
    own, joined to this machine by a veth pair, with an HTTP server in it."""
    name, veth = f"sftest-{uuid.uuid4().hex[:6]}", f"sfo{uuid.uuid4().hex[:6]}"
    host_ip, its_ip, port = "10.213.250.1", "10.213.250.2", 18080
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", veth],
        ["ip", "link", "set", veth, "up"],
        ["ip", "-n", name, "addr", "add", f"{its_ip}/30", "dev", "eth0"],
        ["ip", "-n", name, "link", "set", "eth0", "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "route", "add", "default", "via", host_ip],
    ]
    server = None
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                name,
                sys.executable,
                "-m",
                "http.server",
                "-b",
                its_ip,
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: (
                subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        name,
                        "python3",
                        "-c",
                        f"import socket; socket.create_connection(('{its_ip}', {port}), 1)",
                    ],
                    capture_output=True,
                ).returncode
                == 0
            ),
            what="the outside host's server",
        )
        yield its_ip, port
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_host_network_is_a_namespace_of_the_runs_own(
    stack: Stack, outside_host: tuple[str, int]
) -> None:
    """Attack 9, `network: "host"`: runs used the host's network namespace, so they reached
    the host's abstract unix sockets and whatever listens on its loopback. Before: the
    abstract socket and the loopback listener below both answered. Now a run has its own
    namespace (its own loopback, a veth, NAT): the outside host answers, nothing of this
    machine does."""
    abstract = f"\0shopfloor-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(abstract)
    listener.listen(8)
    loopback = socket.create_server(("0.0.0.0", 0))  # the host's every address
    ip, port = outside_host
    attack = textwrap.dedent(
        """
        import socket, sys, urllib.request
        abstract, loop_port, ip, port = sys.argv[1:]
        interfaces = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
        print("interfaces", interfaces)
        for what, family, address in (
            ("abstract", socket.AF_UNIX, "\\0" + abstract),
            ("loopback", socket.AF_INET, ("127.0.0.1", int(loop_port))),
        ):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(3)
            try:
                s.connect(address)
                print(what, "connected")
            except OSError as err:
                print(what, type(err).__name__)
        gateway = open("/proc/net/route").read().split("\\n")[1].split()[2]
        gateway = ".".join(str(int(gateway[i:i + 2], 16)) for i in (6, 4, 2, 0))
        try:
            socket.create_connection((gateway, int(loop_port)), timeout=3)
            print("host", "connected")
        except OSError as err:
            print("host", type(err).__name__)
        body = urllib.request.urlopen(f"http://{ip}:{port}/", timeout=5).status
        print("outside", body)
        """
    )
    args = [abstract[1:], str(loopback.getsockname()[1]), ip, str(port)]
    try:
        out = run_with_innocents(stack, {"source": attack, "args": args, "network": "host"})
    finally:
        listener.close()
        loopback.close()
    assert _lines(out) == [
        "interfaces ['eth0', 'lo']",
        "abstract ConnectionRefusedError",
        "loopback ConnectionRefusedError",
        "host ConnectionRefusedError",
        "outside 200",
    ]
