"""What this host offers to contain runs, found out once at worker start, and the set-up that
uses it: the zygotes' private mount namespace and the filter on opt-in network.

Levers, each used when present (the worker logs which, and warns about what is missing):
- root: runs get their own uid/gid from a pool (`_identity.UidPool`), so they cannot signal
  the worker, the zygotes or each other, nor read each other's files;
- network namespaces: a run has no network by default (`network: "host"`: one of its own
  with a way out, `_netns`);
- mount and pid namespaces: each run is chrooted into a minimal root of its own
  (`_contain.RunRoot`, whose skeleton each zygote builds once in a private mount namespace)
  and is the init of its own pid namespace;
- cgroup v1 `pids` and `memory`: a process cap and a memory cap over a run's whole tree;
- iptables (owner match): pipeline services and checks, which use the host's network, cannot
  reach the Temporal frontend, its server's other ports, the controller nor the metrics
  ports; the rest of loopback is open to them.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shopfloor.sandbox._cgroup import MEMORY_CGROUP_ROOT, PIDS_CGROUP_ROOT, usable
from shopfloor.sandbox._contain import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    MS_BIND,
    MS_PRIVATE,
    MS_REC,
    RunRoot,
    interpreter_trees,
    seccomp_available,
)
from shopfloor.sandbox._contain import mount as _mount

log = logging.getLogger("shopfloor.sandbox")
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class HostCapabilities:
    root: bool
    netns: bool
    mountns: bool
    pidns: bool
    pids_cgroup: bool
    memory_cgroup: bool
    iptables: bool

    @property
    def own_uids(self) -> bool:
        return self.root

    def describe(self) -> str:
        used = [name for name, on in asdict(self).items() if on]
        if seccomp_available():
            used.append("seccomp")
        line = "sandbox levers: " + (", ".join(used) or "none")
        if self.root and self.mountns:
            line += (
                "; per run: own uid, minimal root (system and interpreter trees read-only, its "
                "own dir, /tmp, /dev/shm)"
                + (", pid namespace" if self.pidns else "")
                + ", IPC and mount namespaces, no_new_privs, empty bounding set, every other "
                "fd closed"
            )
        return line

    def warnings(self) -> list[str]:
        out = []
        if not self.root:
            out.append(
                "not running as root: runs keep the worker's uid (they can signal it and read "
                "what it can read); run workers as root to give each run its own uid"
            )
        if not self.netns:
            out.append("no network namespaces: runs share the host's network")
        if not self.mountns:
            out.append(
                "no mount namespaces: runs see the host's file system and may write its /tmp"
            )
        if not self.pidns:
            out.append("no pid namespaces: runs see the host's processes")
        if not seccomp_available():
            out.append("no seccomp filter for this architecture: runs may make namespaces")
        if not self.pids_cgroup:
            out.append("no writable pids cgroup: processes are capped by RLIMIT_NPROC only")
        if not self.memory_cgroup:
            out.append("no writable memory cgroup: memory is capped per process only")
        if not self.iptables:
            out.append("no iptables: jobs asking for network are refused")
        return out


def _try_in_child(flags: int) -> bool:
    """Whether unshare(flags) works here (tried in a short-lived child, not in us)."""
    code = f"import ctypes, sys\nsys.exit(0 if ctypes.CDLL(None).unshare({flags}) == 0 else 1)\n"
    try:
        return subprocess.run([sys.executable, "-S", "-c", code], timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def detect() -> HostCapabilities:
    root = os.geteuid() == 0
    return HostCapabilities(
        root=root,
        netns=root and _try_in_child(CLONE_NEWNET | CLONE_NEWIPC),
        mountns=root and _try_in_child(CLONE_NEWNS),
        pidns=root and _try_in_child(CLONE_NEWPID),
        pids_cgroup=root and usable(PIDS_CGROUP_ROOT),
        memory_cgroup=root and usable(MEMORY_CGROUP_ROOT),
        iptables=root and shutil.which("iptables") is not None and _iptables_works(),
    )


# -- opt-in network: loopback except the control plane's ports; no Temporal frontend ----------


def _iptables_works() -> bool:
    try:
        return (
            subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, timeout=10).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _host_port(address: str) -> tuple[str, int] | None:
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.hostname is None or parts.port is None:
        return None
    return parts.hostname, parts.port


_RULE_TAG = "shopfloor-filter"


def _tag() -> str:
    """Names the rules of this worker process (boot and pid): a worker that starts removes the
    rules of workers that are gone, as it removes their work roots."""
    from shopfloor.sandbox._identity import boot_id

    return f"{_RULE_TAG}:{boot_id()}:{os.getpid()}"


def network_filter_rules(
    uid_range: tuple[int, int],
    forbidden: list[str],
    protected_ports: list[int] | None = None,
    metrics_ports: list[int] | None = None,
    metrics_gid: int | None = None,
) -> list[list[str]]:
    """iptables OUTPUT rules for the run uids: over loopback, none of `protected_ports` (the
    Temporal frontend and everything its server listens on, the controller, metrics ports);
    nothing to the forbidden addresses (host:port) elsewhere. The rest of loopback stays open:
    pipeline services listen on it and talk to each other (otel → loki → grafana), and their
    health checks reach them there. Traffic to any of this host's own addresses goes over
    `lo`, so a port is shut on all of them."""
    owner = ["-m", "owner", "--uid-owner", f"{uid_range[0]}-{uid_range[1]}"]
    tag = ["-m", "comment", "--comment", _tag()]
    rules = [
        ["-o", "lo", "-p", "tcp", "--dport", str(port), *owner, *tag, "-j", "REJECT"]
        for port in sorted(set(protected_ports or []))
    ]
    for address in forbidden:
        hp = _host_port(address)
        if hp is None:
            continue
        try:
            infos = socket.getaddrinfo(hp[0], hp[1], socket.AF_INET)
            ips = {str(info[4][0]) for info in infos}  # AF_INET: (host, port)
        except OSError:
            continue
        for ip in sorted(ips):
            if ipaddress.ip_address(ip).is_loopback:
                continue  # covered by the loopback rules (its port is protected)
            rules.append(
                ["-d", ip, "-p", "tcp", "--dport", str(hp[1]), *owner, *tag, "-j", "REJECT"]
            )
    # The monitoring pipeline's opening (docs/security.md): a pool uid running with
    # `metrics_gid` — only the operator's monitoring pipeline's services are given it — may
    # reach the metrics ports, and no other protected port. Last in the list: each rule is
    # inserted at the top, so these end above the REJECTs.
    if metrics_gid is not None:
        reader = [*owner, "--gid-owner", str(metrics_gid)]
        rules += [
            ["-o", "lo", "-p", "tcp", "--dport", str(port), *reader, *tag, "-j", "ACCEPT"]
            for port in sorted(set(metrics_ports or []))
        ]
    return rules


def _stale_rules(tool: str, uid_range: tuple[int, int]) -> list[list[str]]:
    """Rules of workers that are gone (their ports may be anyone's now), and the blanket
    loopback rule of earlier versions for this range (it shut services off loopback)."""
    try:
        listed = subprocess.run([tool, "-S", "OUTPUT"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    from shopfloor.sandbox._identity import boot_id

    legacy = f"-o lo -m owner --uid-owner {uid_range[0]}-{uid_range[1]} -j REJECT"
    stale = []
    for line in listed.stdout.splitlines():
        if not line.startswith("-A OUTPUT "):
            continue
        rule = line.removeprefix("-A OUTPUT ")
        if rule.startswith(legacy):
            stale.append(rule.split())
            continue
        if _RULE_TAG + ":" not in rule:
            continue
        boot, _, pid = rule.split(_RULE_TAG + ":", 1)[1].split()[0].strip('"').partition(":")
        if boot != boot_id() or (pid.isdigit() and not Path(f"/proc/{pid}").exists()):
            stale.append(shlex.split(rule))
    return stale


def install_network_filter(
    uid_range: tuple[int, int],
    forbidden: list[str],
    protected_ports: list[int] | None = None,
    metrics_ports: list[int] | None = None,
    metrics_gid: int | None = None,
) -> bool:
    """Adds this worker's rules (idempotent: a rule already there is not added again), then
    removes those of workers that are gone. Rules outlive the worker on purpose: pipeline
    services it started keep running, and stay filtered."""
    ok = True
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            ok = ok and tool == "ip6tables"
            continue
        v4 = tool == "iptables"
        rules = network_filter_rules(
            uid_range, forbidden if v4 else [], protected_ports, metrics_ports, metrics_gid
        )
        for rule in rules:
            check = subprocess.run([tool, "-C", "OUTPUT", *rule], capture_output=True)
            if check.returncode == 0:
                continue
            added = subprocess.run([tool, "-I", "OUTPUT", "1", *rule], capture_output=True)
            if added.returncode != 0:
                log.warning("%s: cannot add %s: %s", tool, rule, added.stderr.decode().strip())
                ok = ok and not v4
        for rule in _stale_rules(tool, uid_range):
            subprocess.run([tool, "-D", "OUTPUT", *rule], capture_output=True)
    return ok


# -- the zygotes' private view of the file system ----------------------------------------------


def enter_private_mounts(
    *, work_root: str, hide: list[str], tmp_mb: int, shared: list[str] | None = None
) -> RunRoot:
    """Called once by a zygote running as root: a mount namespace of its own (its children
    inherit it), a private tmpfs over /tmp to hold the skeleton of the runs' own root
    (`RunRoot`: what each run sees, instead of the host), with what lives under the host's
    /tmp and the skeleton binds bound back first (the work root; the interpreter's trees and
    shared directories when they are there, as a checkout is in CI's fresh clone). Nothing of
    this is seen outside the namespace."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    trees = interpreter_trees(exclude=[os.getcwd()])
    keep = sorted({work_root, *trees, *(shared or [])})
    inside = [k for k in keep if k.startswith("/tmp/")]
    fds = {k: os.open(k, os.O_PATH | os.O_CLOEXEC) for k in inside}
    try:
        _mount("tmpfs", "/tmp", "tmpfs", 0, f"mode=1777,size={tmp_mb}m,nr_inodes=16k")
        for k, fd in fds.items():
            _make_mountpoint("/tmp", k, os.path.isdir(f"/proc/self/fd/{fd}"))
            _mount(f"/proc/self/fd/{fd}", k, None, MS_BIND | MS_REC, None)
    finally:
        for fd in fds.values():
            os.close(fd)
    return RunRoot.build(
        trees=trees, hide=hide, work_root=work_root, tmp_mb=tmp_mb, shared=shared or []
    )


def _make_mountpoint(covered: str, target: str, is_dir: bool) -> None:
    parent = os.path.dirname(target)
    rel = os.path.relpath(parent, covered)
    if rel != ".":
        os.makedirs(parent, mode=0o711, exist_ok=True)
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        open(target, "a").close()
