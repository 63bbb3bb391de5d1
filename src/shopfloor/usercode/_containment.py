"""What a worker uses to contain runs of user code, decided once at start: the host's
capabilities, the work root, the uid pool, the network filter and namespaces."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shopfloor.jobs import invalid_input
from shopfloor.processes import listening_pid, listening_ports
from shopfloor.sandbox import (
    RunIdentity,
    RunNetworks,
    UidLease,
    UidPool,
    WorkRoot,
    ZygoteOptions,
    netns_usable,
)
from shopfloor.sandbox._limits import Network
from shopfloor.sandbox.host import HostCapabilities, detect, install_network_filter
from shopfloor.settings import Settings

log = logging.getLogger("shopfloor.sandbox")
UID_LOCK_DIR = Path("/run/shopfloor-sandbox/uids")


def refuse_over_ceilings(job: object, settings: Settings) -> None:
    """Fails the job at once (non-retryable) when it asks for more than this worker's
    ceilings (`Settings.over_ceiling`): the worker holds to its own settings whichever
    client started the job, never trusting that a controller checked."""
    why = settings.over_ceiling(job)
    if why is not None:
        raise invalid_input(why)


@dataclass
class Containment:
    """What this worker uses to contain runs, decided once at start."""

    caps: HostCapabilities
    work_root: WorkRoot
    uids: UidPool | None
    disk_mb: int  # a run's disk cap when its job asks for none
    max_disk_mb: int  # the most a job may ask for
    max_artifacts: int  # files a run may leave in out/
    network_opt_in: bool  # whether `network: host` may run (filtered, or allowed unfiltered)
    warnings: list[str] = field(default_factory=list)
    # Each uid's own network namespace for `network: "host"` (None: such runs share the
    # host's, filtered by uid).
    networks: RunNetworks | None = None

    def identity(self, lease: UidLease | None, network: Network) -> RunIdentity:
        if network == "none" and not self.caps.netns:
            network = "shared"
        return RunIdentity(
            uid=lease.uid if lease else None,
            gid=lease.gid if lease else None,
            network=network,
        )

    async def network_of(self, lease: UidLease | None, network: Network) -> int | None:
        """A descriptor of the run's own network namespace, for `network: "host"`."""
        if network != "host" or self.networks is None or lease is None:
            return None
        return await asyncio.to_thread(self.networks.open, lease.uid)

    def lease_uid(self) -> UidLease | None:
        """A uid of the pool for a run's process (None: the pool is off)."""
        return self.uids.acquire() if self.uids is not None else None

    def release_uid(self, lease: UidLease | None) -> None:
        if lease is not None and self.uids is not None:
            self.uids.release(lease)

    def zygote_options(self, settings: Settings) -> ZygoteOptions:
        """How this worker's zygotes contain their runs: every zygote a kind starts for runs
        gets the same."""
        mounts = None
        if self.caps.mountns and self.uids is not None:
            hide = {str(settings.data_dir.resolve()), str(settings.artifact_root)}
            mounts = {
                "work_root": str(self.work_root.path),
                "hide": sorted(hide),
                "tmp_mb": settings.sandbox_tmp_mb,
                "shared": [str(p.resolve()) for p in settings.sandbox_shared_dirs],
            }
        return ZygoteOptions(
            mounts=mounts,
            memory_cgroups=self.caps.memory_cgroup,
            pidns=mounts is not None and self.caps.pidns,
        )


def containment(settings: Settings, caps: HostCapabilities | None = None) -> Containment:
    caps = caps or detect()
    uids = _uid_pool(settings) if caps.own_uids else None
    work_root = WorkRoot(settings.sandbox_root, shared_with_runs=uids is not None)
    for gone in work_root.sweep():
        log.info("removed %s, left by a worker that is gone", gone)
    work_root.create()
    network_opt_in = settings.sandbox_unfiltered_network
    if caps.iptables and uids is not None:
        last = settings.sandbox_uid_base + settings.sandbox_uid_count - 1
        forbidden = [settings.target_address, settings.public_controller_url]
        network_opt_in = install_network_filter(
            (settings.sandbox_uid_base, last),
            forbidden,
            protected_ports(settings),
            metrics_ports(settings),
            settings.monitoring_gid if settings.monitoring_pipeline else None,
        )
    warnings = caps.warnings()
    clash = uids_taken(settings.sandbox_uid_base, settings.sandbox_uid_count) if uids else []
    if clash:
        warnings.append(
            f"uids {clash[:5]} of the sandbox range belong to users in /etc/passwd: choose "
            "another SHOPFLOOR_SANDBOX_UID_BASE"
        )
    if network_opt_in and not caps.iptables:
        warnings.append("network: host runs unfiltered (SHOPFLOOR_SANDBOX_UNFILTERED_NETWORK)")
    networks = None
    if network_opt_in and caps.iptables and caps.netns and uids is not None:
        networks = _run_networks(settings, warnings)
    return Containment(
        caps=caps,
        work_root=work_root,
        uids=uids,
        disk_mb=min(settings.sandbox_disk_mb, settings.max_job_disk_mb),
        max_disk_mb=settings.max_job_disk_mb,
        max_artifacts=settings.max_artifacts,
        network_opt_in=network_opt_in,
        warnings=warnings,
        networks=networks,
    )


def _uid_pool(settings: Settings) -> UidPool | None:
    try:
        return UidPool(settings.sandbox_uid_base, settings.sandbox_uid_count, UID_LOCK_DIR)
    except OSError as err:
        log.warning("no uid pool (%s): runs keep the worker's uid", err)
        return None


def _run_networks(settings: Settings, warnings: list[str]) -> RunNetworks | None:
    """Each uid's own network namespace, for `network: "host"` runs (None: they share the
    host's, filtered by uid, and `warnings` says why)."""
    if not netns_usable():
        return None
    try:
        networks = RunNetworks(
            uid_base=settings.sandbox_uid_base,
            uid_count=settings.sandbox_uid_count,
            cidr=settings.sandbox_veth_cidr,
            forbidden=[settings.target_address],
        )
        networks.install()
    except (ValueError, OSError) as err:
        warnings.append(f"network: host runs share the host's network namespace: {err}")
        return None
    return networks


def protected_ports(settings: Settings) -> list[int]:
    """Loopback ports no run (nor pipeline service) may reach: the Temporal frontend and every
    port of the local process serving it (a dev server's HTTP API, UI and metrics ports are
    random unless given; its internal services listen too), the Temporal UI, the controller,
    the worker's metrics port, and any the deployment adds."""
    ports = {settings.controller_port, *settings.sandbox_protected_ports}
    for address in (settings.target_address, settings.public_controller_url, settings.temporal_ui):
        found = urlsplit(address if "://" in address else f"tcp://{address}") if address else None
        if found is not None and found.port is not None:
            ports.add(found.port)
            listener = listening_pid(found.port)
            if listener is not None and listener != os.getpid():
                ports |= listening_ports(listener)
    if settings.embedded:
        ports.add(settings.dev_ui_port)
    if settings.worker_metrics_port:
        ports.add(settings.worker_metrics_port)
    if settings.controller_metrics_port:
        ports.add(settings.controller_metrics_port)
    return sorted(ports)


def metrics_ports(settings: Settings) -> list[int]:
    """The protected ports the monitoring pipeline's services may reach (with
    `SHOPFLOOR_MONITORING_PIPELINE` set): this worker's and the controller's metrics-only
    ports, never one that is also the controller's API, Temporal's or its UI's."""
    if not settings.monitoring_pipeline:
        return []
    wanted = {settings.worker_metrics_port, settings.controller_metrics_port} - {0}
    without = settings.model_copy(update={"worker_metrics_port": 0, "controller_metrics_port": 0})
    return sorted(wanted - set(protected_ports(without)))


def uids_taken(base: int, count: int) -> list[int]:
    """Uids of the pool's range that /etc/passwd gives to someone (a clash to warn about)."""
    taken = []
    try:
        for line in Path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit() and base <= int(fields[2]) < base + count:
                taken.append(int(fields[2]))
    except OSError:
        pass
    return taken
