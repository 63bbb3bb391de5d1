"""The egress policy: where requests made on a job's behalf may go.

A phased `http` step names any URL, and gateway or model URLs reach whatever the worker
reaches: without a policy a job reads the Temporal UI's API (other jobs' input), terminates
jobs through Temporal's HTTP API, or reads metrics. Every outgoing request a worker makes for
a job goes through `EgressPolicy.client()`, whose connections are checked where they are
made: the host name is resolved once, every resolved address is checked, and the connection
goes to the address that passed (pinned: a second resolution cannot swap in another address),
with the original Host header and TLS server name. Redirects open new connections, so each
hop is checked the same way.

Refused by default: loopback, link-local, private, multicast, unspecified, reserved and cloud
metadata addresses. `SHOPFLOOR_EGRESS_ALLOW` (a worker setting, never job input) opens named
hosts, addresses or CIDRs, optionally one port (`127.0.0.1:8787`, `10.0.0.0/8`,
`gateway.internal:443`). Never opened, whatever a name resolves to: the control plane's ports
(Temporal's frontend, its HTTP API and UI, the controller, metrics) on any non-public address
or on the addresses of the configured control hosts.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpx
from temporalio.exceptions import ApplicationError

from shopfloor.ports import HTTP_API_OFFSET, METRICS_OFFSET

if TYPE_CHECKING:
    from shopfloor.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "SHOPFLOOR_EGRESS_ALLOW"
REFUSED = "EgressRefused"  # the ApplicationError type of a refused step
# AWS/GCP/Azure (IMDS), AWS ECS task metadata, Alibaba Cloud, AWS IMDS over IPv6.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")


class EgressRefused(Exception):
    """A destination the policy refuses; `rule` says which rule, in words."""

    def __init__(self, host: str, port: int, rule: str) -> None:
        self.host, self.port, self.rule = host, port, rule
        super().__init__(f"egress refused: {host}:{port}: {rule}")

    def final(self, what: str) -> ApplicationError:
        """The step's failure: not retried (the same URL is refused every time)."""
        return ApplicationError(f"{what}: {self}", type=REFUSED, non_retryable=True)


@dataclass(frozen=True)
class AllowEntry:
    network: IPNetwork | None
    host: str | None
    port: int | None

    def matches(self, host: str, address: IPAddress, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.host is not None:
            return _norm_host(host) == self.host
        return self.network is not None and address in self.network


def parse_allow(entries: Iterable[str]) -> list[AllowEntry]:
    """`host`, `host:port`, `address`, `[v6]:port`, `CIDR` or `CIDR:port`; ValueError naming
    the entry otherwise."""
    parsed = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        what, port = entry, None
        if entry.startswith("["):
            inside, _, rest = entry[1:].partition("]")
            what, port = inside, rest.removeprefix(":") or None
        elif entry.count(":") == 1:
            what, port = entry.split(":")
        try:
            port_number = int(port) if port is not None else None
            if port_number is not None and not 0 < port_number < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(f"{ALLOW_SETTING}: bad port in {raw!r}") from None
        try:
            parsed.append(AllowEntry(ipaddress.ip_network(what, strict=False), None, port_number))
            continue
        except ValueError:
            pass
        if not _HOST_NAME.match(what) or len(what) > 253:
            raise ValueError(
                f"{ALLOW_SETTING}: {raw!r} is not a host name, address or CIDR "
                "(optionally with :port)"
            )
        parsed.append(AllowEntry(None, _norm_host(what), port_number))
    return parsed


def _norm_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _effective(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (`::ffff:127.0.0.1`, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_class(address: IPAddress) -> str | None:
    """Why `address` is internal (refused unless allowed), or None for a public address."""
    if address in METADATA:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "the unspecified address (it means this machine)"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved (non-public) address"
    return None


class EgressPolicy:
    def __init__(
        self,
        *,
        allow: Iterable[AllowEntry] = (),
        control_ports: dict[int, str] | None = None,
        control_hosts: Iterable[str] = (),
    ) -> None:
        self.allow = list(allow)
        self.control_ports = dict(control_ports or {})
        self._control_hosts = {_norm_host(h) for h in control_hosts if h}
        self._control_addresses: set[IPAddress] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        ports: dict[int, str] = {}
        hosts: list[str] = []

        def add(url_or_hostport: str | None, name: str, *, default_port: int = 80) -> int | None:
            if not url_or_hostport:
                return None
            parts = urlsplit(url_or_hostport if "//" in url_or_hostport else f"//{url_or_hostport}")
            port = parts.port or default_port
            ports.setdefault(port, name)
            if parts.hostname:
                hosts.append(parts.hostname)
            return port

        frontend = add(settings.target_address, "the Temporal frontend", default_port=7233)
        if frontend:
            ports.setdefault(frontend + HTTP_API_OFFSET, "Temporal's HTTP API")
            ports.setdefault(frontend + METRICS_OFFSET, "the Temporal server's metrics")
        if settings.embedded:
            ports.setdefault(settings.dev_ui_port, "the Temporal UI")
        add(settings.temporal_ui, "the Temporal UI")
        ports.setdefault(settings.controller_port, "the shopfloor controller")
        add(settings.public_controller_url, "the shopfloor controller")
        for port in [settings.worker_metrics_port, *settings.egress_deny_ports]:
            if port:
                ports.setdefault(port, "a shopfloor metrics or control port")
        return cls(
            allow=parse_allow(settings.egress_allow), control_ports=ports, control_hosts=hosts
        )

    async def _control_addrs(self) -> set[IPAddress]:
        """The addresses the configured control hosts resolve to (a public Temporal or
        controller address is still the control plane)."""
        if self._control_addresses is None:
            found: set[IPAddress] = set()
            for host in self._control_hosts:
                try:
                    found.update(await _resolve(host, 0))
                except OSError:
                    continue  # not resolvable here: nothing of it to protect from this worker
            self._control_addresses = found
        return self._control_addresses

    async def refusal(self, host: str, address: IPAddress, port: int) -> str | None:
        """The rule refusing `host` at `address`:`port`, or None when it may be reached."""
        address = _effective(address)
        internal = address_class(address)
        control = self.control_ports.get(port)
        if control and (internal or address in await self._control_addrs()):
            return f"port {port} there is {control} (the control plane is never reachable)"
        if any(entry.matches(host, address, port) for entry in self.allow):
            return None
        if internal:
            return f"{address} is {internal}; refused unless the worker's {ALLOW_SETTING} names it"
        return None

    async def pick(self, host: str, port: int) -> str:
        """The address to connect to for `host`: the first resolved one the policy allows.
        Raises EgressRefused (naming the first rule) when none is."""
        first_rule = None
        for address in await _resolve(host, port):
            rule = await self.refusal(host, address, port)
            if rule is None:
                return str(address)
            first_rule = first_rule or rule
        raise EgressRefused(host, port, first_rule or "the name has no address")

    def client(self, *, lib: Any = httpx, **options: Any) -> Any:
        """An `httpx.AsyncClient` (or of `lib`, an httpx fork such as the `anthropic` SDK's)
        whose every connection the policy checks and pins. No proxies from the environment:
        a proxy would make the connection the policy checked the wrong one."""
        transport = lib.AsyncHTTPTransport(trust_env=False)
        pool = transport._pool  # the transport's connection pool; its backend makes connections
        pool._network_backend = _GuardedBackend(self, pool._network_backend, lib.ConnectError)
        return lib.AsyncClient(transport=transport, trust_env=False, **options)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(_norm_host(host))]
    except ValueError:
        pass
    # getaddrinfo, like the connection would: so `2130706433`, `0177.0.0.1` and names in
    # /etc/hosts resolve here to the same address they would reach.
    infos = await anyio.getaddrinfo(_norm_host(host), port, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


class _GuardedBackend:
    """An httpcore network backend that connects only to addresses the policy allows, and to
    exactly the address it checked."""

    def __init__(self, policy: EgressPolicy, inner: Any, connect_error: type[Exception]) -> None:
        self.policy = policy
        self.inner = inner
        self.connect_error = connect_error

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> Any:
        try:
            address = await self.policy.pick(host, port)
        except OSError as err:  # the name does not resolve: a network error, retried
            raise self.connect_error(f"cannot resolve {host}: {err}") from err
        return await self.inner.connect_tcp(address, port, **kwargs)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise EgressRefused("unix socket", 0, "unix sockets are never reachable")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
