"""Reading the process table from /proc: who a process is, and which carry a given marker."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), …
    ppid: int
    pgid: int
    sid: int
    starttime: int  # clock ticks after boot: with the pid, names one process for good

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X")


def stat(pid: int) -> ProcStat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        starttime=int(fields[19]),
    )


def running(pid: int, starttime: int) -> bool:
    """That very process (not a later one that reused the pid) exists and has not exited."""
    found = stat(pid)
    return found is not None and found.starttime == starttime and not found.exited


def environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False


def marked(name: str, value: str) -> list[ProcStat]:
    """Live processes whose environment holds NAME=VALUE (their children inherit it)."""
    entry = f"{name}={value}".encode()
    found = []
    for child in PROC.iterdir():
        if not child.name.isdigit() or int(child.name) == os.getpid():
            continue
        pid = int(child.name)
        if environ_has(pid, entry):
            st = stat(pid)
            if st is not None and not st.exited:
                found.append(st)
    return found


def uid_of(pid: int) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def environ(pid: int) -> list[bytes]:
    """The process's environment as NAME=VALUE entries ([] when gone or not ours to read)."""
    try:
        return (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return []


def carrying(name: str) -> list[tuple[ProcStat, dict[str, str]]]:
    """Live processes whose environment sets NAME, each with its whole environment (decoded)."""
    prefix = f"{name}=".encode()
    found = []
    me = os.getpid()
    for child in PROC.iterdir():
        if not child.name.isdigit() or int(child.name) == me:
            continue
        entries = environ(int(child.name))
        if not any(e.startswith(prefix) for e in entries):
            continue
        st = stat(int(child.name))
        if st is None or st.exited:
            continue
        env = {}
        for entry in entries:
            key, sep, value = entry.partition(b"=")
            if sep:
                env[key.decode(errors="replace")] = value.decode(errors="replace")
        found.append((st, env))
    return found


def cmdline(pid: int, limit: int = 160) -> str | None:
    """The process's command line, shortened; None when it cannot be read (gone, hidden)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    text = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 3] + "..."


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets the process holds open."""
    found = set()
    try:
        for fd in os.scandir(PROC / str(pid) / "fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    except OSError:
        pass
    return found


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def listeners(ip: str, port: int) -> set[int]:
    """The inodes of the TCP sockets in this network namespace listening where a connection to
    ip:port lands: bound to that very address, or to the unspecified one (v4 `0.0.0.0`, or v6
    `::`, which takes v4 too unless it is v6-only: counted, to be safe)."""
    target = ipaddress.ip_address(ip)
    if isinstance(target, ipaddress.IPv6Address) and target.ipv4_mapped:
        target = target.ipv4_mapped
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) <= 9 or fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) != port:
                continue
            bound = _address(hex_ip)
            if isinstance(bound, ipaddress.IPv6Address) and bound.ipv4_mapped:
                bound = bound.ipv4_mapped
            if bound == target or bound.is_unspecified:
                found.add(int(fields[9]))
    return found


def holders(inodes: set[int], among: set[int] | None = None) -> set[int]:
    """The pids (of `among`, else of every process) holding any of these socket inodes."""
    if among is None:
        among = {int(c.name) for c in PROC.iterdir() if c.name.isdigit()}
    return {pid for pid in among if socket_inodes(pid) & inodes}
