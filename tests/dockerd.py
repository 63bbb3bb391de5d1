"""A Docker engine of the tests' own: `dockerd` on a private socket under a temporary directory,
with the small images the tests need built locally (no registry is reachable from CI).

    dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs
            --data-root D/root --exec-root D/exec --pidfile D/pid -H unix://D/sock

No iptables rules, no bridge (containers use `--network host` or `none`), vfs storage (works
on any filesystem, no overlay mounts) and every path under D, so it shares nothing with another
engine on the machine. `stop` leaves nothing behind: no process, no mount, no file; it returns
anything it could not remove, for the fixture to fail on.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from contextlib import closing
from pathlib import Path

import docker

BUSYBOX_IMAGE = "local/busybox:1"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
MNT_DETACH = 2
# Made by any dockerd/containerd whatever their roots (plugin specs, shim sockets): removed
# after the engine stops when it created them and they are empty.
SHARED_DIRS = [Path("/run/containerd/s"), Path("/run/containerd"), Path("/run/docker/plugins"),
               Path("/run/docker")]  # fmt: skip


class DockerdUnavailable(Exception):
    """dockerd cannot run here; the message says which command failed and how."""


class PrivateDockerd:
    def __init__(self, root: Path, dockerd: str) -> None:
        self.root = root
        self.command = [
            dockerd,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            f"--data-root={root}/root",
            f"--exec-root={root}/exec",
            f"--pidfile={root}/pid",
            # Its own (not the host's /etc/docker/daemon.json), naming its identity key's path:
            # else the engine writes /etc/docker/key.json, a file left behind.
            f"--config-file={root}/daemon.json",
            f"--host=unix://{root}/sock",
        ]
        self.log = root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._shared_before = {d for d in SHARED_DIRS if d.exists()}

    @property
    def url(self) -> str:
        return f"unix://{self.root}/sock"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=60)

    @classmethod
    def start(cls) -> PrivateDockerd:
        dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/sbin")
        if dockerd is None:
            raise DockerdUnavailable(
                "no `dockerd` on PATH: `scripts/install-system-deps.sh` installs Debian's docker.io"
            )
        if os.geteuid() != 0:
            raise DockerdUnavailable(
                f"`dockerd` needs root here and these tests run as uid {os.geteuid()}"
            )
        # Short and under /tmp: the socket's path must fit in 108 bytes; not pytest's tmp dirs,
        # which keep the last runs (the engine's files must go).
        engine = cls(Path(tempfile.mkdtemp(prefix="sf-dockerd-", dir="/tmp")), dockerd)
        try:
            engine._launch()
        except BaseException:
            engine.stop()
            raise
        return engine

    def _launch(self) -> None:
        config = {"deprecated-key-path": f"{self.root}/key.json"}
        (self.root / "daemon.json").write_text(json.dumps(config))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DockerdUnavailable(
                    f"`{' '.join(self.command)}` exited with status {self.proc.returncode}:\n"
                    + self._log_tail()
                )
            if (self.root / "sock").exists():
                try:
                    with closing(self.client()) as c:
                        c.ping()
                    return
                except Exception:  # noqa: BLE001 - not answering yet
                    pass
            time.sleep(0.1)
        raise DockerdUnavailable(
            f"`{' '.join(self.command)}` did not answer on {self.url} within "
            f"{START_TIMEOUT_S}s:\n" + self._log_tail()
        )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- images --------------------------------------------------------------------------------

    def import_busybox(self, name: str = BUSYBOX_IMAGE) -> str:
        """`tar -C rootfs -c . | docker import - NAME`: a ~2 MB image of static busybox and its
        applet links (`sh`, `sleep`, `httpd`, …), small enough for vfs to copy per container."""
        busybox = Path("/bin/busybox")
        if not busybox.exists():
            raise DockerdUnavailable(
                "no /bin/busybox: `scripts/install-system-deps.sh` installs busybox-static"
            )
        applets = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for d in ("bin", "tmp", "etc", "proc", "sys", "dev"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
                tar.addfile(info)
            tar.add(busybox, arcname="bin/busybox")
            for applet in applets:
                if applet != "busybox":
                    link = tarfile.TarInfo(f"bin/{applet}")
                    link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                    tar.addfile(link)
        repository, _, tag = name.rpartition(":")
        with closing(self.client()) as c:
            c.api.import_image_from_data(buf.getvalue(), repository=repository, tag=tag)
            c.images.get(name)  # raises if the import did not make it
        return name

    def build(self, name: str, dockerfile: str) -> str:
        """`docker build` of a Dockerfile with no context (FROM an image built here)."""
        with closing(self.client()) as c:
            c.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=name, rm=True)
        return name

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stops the engine and removes everything it made. Returns what is left behind
        (processes, mounts, files): empty, unless something could not be removed."""
        if self.proc is not None and self.proc.poll() is None:
            try:  # containers first: the engine's shutdown waits for them otherwise
                with closing(self.client()) as c:
                    for container in c.containers.list(all=True):
                        container.remove(force=True)
            except Exception:  # noqa: BLE001 - stopping goes on whatever the engine answers
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # containerd and its shims are the engine's children; any still running (the engine
        # was killed) name our directory on their command lines.
        for pid in self._processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_for(lambda: not self._processes())
        # dockerd leaves the bind mount of the host's network namespace (exec/netns/default).
        for mount in sorted(self._mounts(), key=len, reverse=True):
            _umount(mount)
        if not self._mounts():
            shutil.rmtree(self.root, ignore_errors=True)
        for d in SHARED_DIRS:
            if d not in self._shared_before:
                try:
                    d.rmdir()  # only when empty: another engine may be using it
                except OSError:
                    pass
        return self.leftovers()

    def leftovers(self) -> list[str]:
        left = [f"process {pid}: {_cmdline(pid)}" for pid in self._processes()]
        left += [f"mount {m}" for m in self._mounts()]
        if self.root.exists():
            left.append(f"directory {self.root}")
        return left

    def _processes(self) -> list[int]:
        mine = str(self.root).encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                    status = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if mine in cmdline and status[0] != "Z":
                    found.append(int(entry))
        return found

    def _mounts(self) -> list[str]:
        prefix = str(self.root)
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                mounts.append(point)
        return mounts


def _umount(path: str) -> None:
    # umount(2) itself: the umount tool would leave its own /run/mount behind.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(path.encode(), 0) != 0:
        libc.umount2(path.encode(), MNT_DETACH)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def _wait_for(done, timeout_s: float = 10) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
