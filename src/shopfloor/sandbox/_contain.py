"""The levers a run's first process pulls on itself, as root, before user code: a minimal view
of the file system of its own, then no way back to privilege.

Light on purpose (ctypes and the standard library only): zygotes import it before their heavy
modules, and it runs between fork and user code, where nothing slow may happen.

The file system a run sees (`RunRoot`):
- a skeleton built once per zygote, in the zygote's private mount namespace: a tmpfs holding
  read-only, nosuid, nodev binds of the system trees (/usr, /etc, /lib…) and of the
  interpreter's own trees (its prefixes and sys.path — the venv, the package's source), a
  /dev of a few character devices, and nothing else: no checkout, no /root, no /work, no data
  dir, no world-writable host directory (/var/tmp, /run/lock, /var/crash… are simply absent);
- per run, in a mount namespace of the run's own: /tmp and /dev/shm fresh tmpfs with their own
  size cap (gone with the run), the run's own directory bound at its path, and /proc mounted
  for the run's own pid namespace; then chroot into the skeleton.

Then (`drop_privileges`): the capability bounding set emptied, `no_new_privs` set, the run's
uid/gid; and (`refuse_new_namespaces`) a seccomp filter that refuses user namespaces (and any
other namespace: unshare, setns, clone with a CLONE_NEW* flag; clone3, which a filter cannot
inspect, is ENOSYS so that libc falls back to clone).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
NEW_NAMESPACE_FLAGS = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
    | CLONE_NEWTIME
)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

# The system trees a program needs; each is bound read-only where it is a directory, or
# recreated as the same symlink where it is one (merged /usr: /bin -> usr/bin).
SYSTEM_TREES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
SKELETON = "/tmp/.shopfloor-run-root"  # inside the zygote's private /tmp: never on the host


class ContainmentFailed(OSError):
    """A lever the worker said was there could not be applied: the run must not start."""


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    def enc(v: str | None) -> bytes | None:
        return v.encode() if v is not None else None

    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise ContainmentFailed(err, f"mount {source} on {target}: {os.strerror(err)}")


def unshare(flags: int, what: str) -> None:
    if _libc.unshare(flags) != 0:
        raise ContainmentFailed(ctypes.get_errno(), f"cannot make {what}")


# -- the file system a run sees -----------------------------------------------------------------


def interpreter_trees(exclude: list[str]) -> list[str]:
    """The interpreter's own trees: its prefixes and sys.path, as real paths, without those
    inside a system tree or another kept tree, and without `exclude` (the launcher's cwd,
    which `python -m` puts on sys.path: a checkout, not a library)."""
    paths = {os.path.dirname(os.path.realpath(sys.executable)), sys.prefix, sys.base_prefix}
    paths |= {sys.exec_prefix, *(p for p in sys.path if p)}
    real = {os.path.realpath(p) for p in paths if os.path.isdir(p)}
    real -= {os.path.realpath(e) for e in exclude}
    kept = sorted(real)
    roots = [os.path.realpath(t) for t in SYSTEM_TREES if os.path.isdir(t)]
    out: list[str] = []
    for path in kept:
        if any(_within(path, r) for r in roots + out):
            continue
        out.append(path)
    return out


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class RunRoot:
    """The skeleton's path and what each run adds to it."""

    path: str
    tmp_mb: int
    # Trees that live under /tmp (a checkout's venv in CI): each run's own /tmp covers them
    # in the skeleton, so they are bound back from it.
    tmp_trees: tuple[str, ...] = ()
    hidepid: bool = False  # for processes without a pid namespace of their own

    @classmethod
    def build(
        cls,
        *,
        trees: list[str],
        hide: list[str],
        work_root: str,
        tmp_mb: int,
        shared: Sequence[str] = (),
        path: str = SKELETON,
    ) -> RunRoot:
        """Once per zygote, in its private mount namespace (as root)."""
        umask = os.umask(0o022)  # the skeleton's directories are for every run uid to pass
        try:
            return cls._build(trees, hide, work_root, tmp_mb, shared, path)
        finally:
            os.umask(umask)

    @classmethod
    def _build(
        cls,
        trees: list[str],
        hide: list[str],
        work_root: str,
        tmp_mb: int,
        shared: Sequence[str],
        path: str,
    ) -> RunRoot:
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m,nr_inodes=4k")
        for tree in SYSTEM_TREES:
            if os.path.islink(tree):
                os.symlink(os.readlink(tree), path + tree)
            elif os.path.isdir(tree):
                _bind_read_only(tree, path + tree)
        trees = [t for t in trees if os.path.isdir(t)]  # absent from this view: not bound
        for tree in trees:
            if not os.path.exists(path + tree):  # not inside one bound already
                _bind_read_only(tree, path + tree)
        for directory in shared:  # read-write: the operator's choice (sandbox_shared_dirs)
            if os.path.isdir(directory):
                os.makedirs(path + directory, exist_ok=True)
                mount(directory, path + directory, None, MS_BIND | MS_REC, None)
                flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV
                mount(None, path + directory, None, flags, None)
        for hidden in hide:  # a data dir inside a bound tree stays out of sight
            if os.path.isdir(path + hidden):
                mount("tmpfs", path + hidden, "tmpfs", MS_RDONLY, "mode=0700,size=4k")
        _make_dev(path + "/dev")
        for d in ("/tmp", "/proc", "/run"):
            os.makedirs(path + d, mode=0o755, exist_ok=True)
        if not _within(work_root, "/tmp"):  # a mount point for each run's own directory
            make_passage(path, work_root)
        # Bound read-only at the end: runs share the skeleton, none may change it.
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
        under_tmp = tuple(t for t in [*trees, *shared] if _within(t, "/tmp"))
        return cls(path=path, tmp_mb=tmp_mb, tmp_trees=under_tmp)

    def enter(self, run_dir: str) -> None:
        """In the run's first process, in a new mount namespace, as root: its own /tmp,
        /dev/shm and /proc, its own directory, then chroot."""
        umask = os.umask(0o022)  # the way to its directory is for the run's uid to pass
        try:
            self._enter(run_dir)
        finally:
            os.umask(umask)

    def _enter(self, run_dir: str) -> None:
        root = self.path
        size = f"size={self.tmp_mb}m,nr_inodes=16k"
        kept = {t: os.open(root + t, os.O_PATH | os.O_CLOEXEC) for t in self.tmp_trees}
        try:
            mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777," + size)
            for tree, fd in kept.items():
                os.makedirs(root + tree, mode=0o755, exist_ok=True)
                mount(f"/proc/self/fd/{fd}", root + tree, None, MS_BIND | MS_REC, None)
        finally:
            for fd in kept.values():
                os.close(fd)
        mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777," + size)
        # The run's directory at its own path, alone in its work root: inside the run's /tmp
        # when the work root lives in /tmp (the default), else on a tmpfs over the work root.
        work_root = os.path.dirname(run_dir)
        if not _within(work_root, "/tmp"):
            mount("tmpfs", root + work_root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0711,size=16k")
        target = root + run_dir
        make_passage(root, os.path.dirname(run_dir))
        os.mkdir(target, 0o700)
        mount(run_dir, target, None, MS_BIND | MS_REC, None)
        # /proc of the caller's pid namespace: a run's own (its processes, nobody else's);
        # for a service, which has none of its own, only the processes it may trace
        # (`hidepid`): none of the host's.
        data = "hidepid=invisible" if self.hidepid else None
        mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, data)
        if _libc.chroot(root.encode()) != 0:
            raise ContainmentFailed(ctypes.get_errno(), "chroot into the run's root")
        os.chdir("/")


def make_passage(root: str, path: str) -> None:
    """`path` made under `root`, each directory on the way that is new 0711: passed through
    to the run's own directory, never listed (a home under the data dir shows nothing of it)."""
    here = root
    for part in Path(path).parts[1:]:
        here = os.path.join(here, part)
        if not os.path.isdir(here):
            os.mkdir(here)
            os.chmod(here, 0o711)


def _bind_read_only(source: str, target: str) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(source, target, None, MS_BIND | MS_REC, None)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
    mount(None, target, None, flags, None)


def _make_dev(dev: str) -> None:
    os.makedirs(dev, exist_ok=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755,size=64k")
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            open(f"{dev}/{name}", "a").close()
            mount("/dev/" + name, f"{dev}/{name}", None, MS_BIND, None)
    os.makedirs(dev + "/shm", exist_ok=True)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")


# -- no way back to privilege ----------------------------------------------------------------


def last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 63


def drop_privileges(uid: int | None, gid: int | None, *, last_cap: int) -> None:
    """As root: empty the capability bounding set (nothing an exec could regain), clear the
    ambient set, set no_new_privs (setuid binaries do nothing), then become uid/gid."""
    if os.geteuid() == 0:
        for cap in range(last_cap + 1):
            if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise ContainmentFailed(ctypes.get_errno(), f"cannot drop capability {cap}")
        _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise ContainmentFailed(ctypes.get_errno(), "cannot set no_new_privs")
    if uid is not None:
        os.setgroups([])
        os.setgid(gid if gid is not None else uid)
        os.setuid(uid)


# Per architecture: (AUDIT_ARCH, unshare, clone, clone3, setns); clone's flags are its first
# argument on both.
_ARCHES = {
    "x86_64": (0xC000003E, 272, 56, 435, 308),
    "aarch64": (0xC00000B7, 97, 220, 435, 268),
}
_X32_SYSCALL_BIT = 0x40000000


def _seccomp_program() -> bytes | None:
    arch = _ARCHES.get(platform.machine())
    if arch is None:
        return None
    audit_arch, nr_unshare, nr_clone, nr_clone3, nr_setns = arch
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    # (code, jump if true, jump if false, k): jumps count the instructions to skip.
    program = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, audit_arch),
        (ret, 0, 0, kill),  # another ABI (i386 on x86_64): none of the numbers below hold
        (ld, 0, 0, 0),  # seccomp_data.nr
        (jge, 0, 1, _X32_SYSCALL_BIT),
        (ret, 0, 0, enosys),  # the x32 ABI
        (jeq, 0, 1, nr_clone3),
        (ret, 0, 0, enosys),  # its flags are behind a pointer: libc falls back to clone
        (jeq, 0, 1, nr_setns),
        (ret, 0, 0, eperm),
        (jeq, 1, 0, nr_unshare),
        (jeq, 0, 3, nr_clone),
        (ld, 0, 0, 16),  # args[0], low 32 bits: the flags
        (jset, 0, 1, NEW_NAMESPACE_FLAGS),
        (ret, 0, 0, eperm),
        (ret, 0, 0, allow),
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


_PROGRAM = _seccomp_program()


def seccomp_available() -> bool:
    return _PROGRAM is not None


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def refuse_new_namespaces() -> None:
    """A seccomp filter (needs no_new_privs): no new namespace of any kind, user namespaces
    first among them, and no joining another (setns)."""
    if _PROGRAM is None:
        raise ContainmentFailed(errno.ENOSYS, f"no seccomp filter for {platform.machine()}")
    buffer = ctypes.create_string_buffer(_PROGRAM, len(_PROGRAM))
    fprog = _SockFprog(len(_PROGRAM) // 8, ctypes.addressof(buffer))
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise ContainmentFailed(ctypes.get_errno(), "cannot install the seccomp filter")


def close_fds_except(keep: set[int]) -> None:
    """Every descriptor but `keep` closed: nothing of the zygote's (its epoll fd, its socket)
    or of another run reaches user code."""
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)
