"""`network: "host"` without the host's network namespace: each run uid has a network
namespace of its own, with its own loopback, joined to the host by a veth pair and let out by
NAT. So a run with network shares nothing of the host's stack — not its loopback (the dev
server, the controller, any local service), not its abstract unix sockets — and iptables keeps
it off the host itself, off other runs and off metadata addresses.

One namespace per uid of the machine-wide pool (`sf-u<uid>`, a veth `sfh<uid>` on the host
side, a /30 of `SANDBOX_VETH_CIDR` derived from the uid): the uid lease makes its use
exclusive, on every worker of the machine, and it is made once, on a uid's first `network:
"host"` run, then kept (nothing of a run outlives it there: its processes, and so its sockets,
die with its pid namespace). The worker opens the namespace and passes the descriptor with the
launch request: a zygote's mount namespace does not see namespaces made after it started.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger("shopfloor.sandbox")

NETNS_DIR = Path("/run/netns")
HOST_VETH_PREFIX = "sfh"
METADATA = "169.254.0.0/16"


class NetnsUnavailable(OSError):
    """The per-run network namespace could not be made: the run must not start."""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def usable() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


class RunNetworks:
    """The host's side of per-run network namespaces: the forwarding and NAT rules (once per
    worker start, idempotent), and each uid's namespace (on first use)."""

    def __init__(self, *, uid_base: int, uid_count: int, cidr: str, forbidden: list[str]):
        self.uid_base, self.uid_count = uid_base, uid_count
        self.network = ipaddress.ip_network(cidr)
        if self.network.num_addresses < 4 * uid_count:
            raise ValueError(f"{cidr} is too small for {uid_count} runs' /30 networks")
        self.forbidden = forbidden  # "ip:port" outside the machine: the Temporal frontend

    # -- once per worker ------------------------------------------------------------------------

    def install(self) -> None:
        """Forwarding on, runs' traffic out by NAT; nothing from a run to the host itself, to
        another run, to metadata addresses or to the forbidden addresses."""
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        veths = HOST_VETH_PREFIX + "+"
        cidr = str(self.network)
        _ensure("nat", "POSTROUTING", ["-s", cidr, "!", "-d", cidr, "-j", "MASQUERADE"])
        _ensure("filter", "INPUT", ["-i", veths, "-j", "REJECT"])
        # FORWARD, in the order they are checked: refusals, then what a run may do (its
        # replies come back), so that a DROP policy of the host's does not cut it off.
        forward = [
            ["-i", veths, "-o", veths, "-j", "REJECT"],
            ["-i", veths, "-d", METADATA, "-j", "REJECT"],
            *(
                ["-i", veths, "-d", ip, "-p", "tcp", "--dport", port, "-j", "REJECT"]
                for ip, port in self._forbidden_ips()
            ),
            ["-i", veths, "-j", "ACCEPT"],
            ["-o", veths, "-m", "state", "--state", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ]
        for position, rule in enumerate(forward, start=1):
            _ensure("filter", "FORWARD", rule, position=position)

    def _forbidden_ips(self) -> list[tuple[str, str]]:
        import socket

        out = []
        for address in self.forbidden:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                continue
            try:
                infos = socket.getaddrinfo(host.strip("[]"), int(port), socket.AF_INET)
            except OSError:
                continue
            for ip in sorted({str(info[4][0]) for info in infos}):  # AF_INET: (host, port)
                if not ipaddress.ip_address(ip).is_loopback:  # a run has its own loopback
                    out.append((ip, port))
        return out

    # -- per uid ------------------------------------------------------------------------------

    def addresses(self, uid: int) -> tuple[str, str]:
        """(host side, run side) of the uid's /30."""
        base = self.network.network_address + 4 * (uid - self.uid_base)
        return str(base + 1), str(base + 2)

    def open(self, uid: int) -> int:
        """A descriptor of the uid's network namespace, made if it is not there yet."""
        name = f"sf-u{uid}"
        path = NETNS_DIR / name
        if not path.exists() or not self._ready(name):
            self._make(uid, name)
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def _ready(self, name: str) -> bool:
        done = _run("ip", "-n", name, "route", "show", "default")
        return done.returncode == 0 and "default" in done.stdout

    def _make(self, uid: int, name: str) -> None:
        host_if, (host_ip, run_ip) = f"{HOST_VETH_PREFIX}{uid}", self.addresses(uid)
        _run("ip", "link", "del", host_if)  # a half-made one, left by a killed worker
        _run("ip", "netns", "del", name)
        steps = [
            ("ip", "netns", "add", name),
            ("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", name),
            ("ip", "addr", "add", f"{host_ip}/30", "dev", host_if),
            ("ip", "link", "set", host_if, "up"),
            ("ip", "-n", name, "link", "set", "lo", "up"),
            ("ip", "-n", name, "addr", "add", f"{run_ip}/30", "dev", "eth0"),
            ("ip", "-n", name, "link", "set", "eth0", "up"),
            ("ip", "-n", name, "route", "add", "default", "via", host_ip),
        ]
        for step in steps:
            done = _run(*step)
            if done.returncode != 0:
                raise NetnsUnavailable(
                    f"cannot make the run's network namespace: {' '.join(step)}: "
                    f"{done.stderr.strip()}"
                )


def _ensure(table: str, chain: str, rule: list[str], *, position: int | None = None) -> None:
    """Adds `rule` unless it is there (`-C`); at `position` when given, else appended."""
    if _run("iptables", "-t", table, "-C", chain, *rule).returncode == 0:
        return
    where = ["-I", chain, str(position)] if position else ["-A", chain]
    added = _run("iptables", "-t", table, *where, *rule)
    if added.returncode != 0:
        raise NetnsUnavailable(f"iptables -t {table} {chain} {rule}: {added.stderr.strip()}")
