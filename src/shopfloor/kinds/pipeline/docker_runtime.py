"""The `docker` runtime: services as containers, through the `docker` SDK.

Containers carry labels (pipeline, service, run token, and the stack and job that made them)
and a fixed name per pipeline and service (and stack), so a start retried after a crash finds
the container it created (running or not) instead of creating a second; a container of an
earlier run of the pipeline (a terminated run's) is replaced, and the start says so
(`ServiceHandle.leftovers`). Another stack's containers of a pipeline of the same name are not
this one's; a run of the pipeline whose job is still running is no earlier run (a start is
refused, naming it). The
SDK blocks (it is `requests` underneath): every call goes through `asyncio.to_thread`, never
on the worker's event loop.

What a person can act on, rather than the SDK's exceptions: no engine at the configured address
(`DockerEngineUnavailable`, naming the address and where it came from), and an image that is
neither on the engine nor pullable (`ImageUnavailable`, naming the image and the registry error).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from shopfloor.jobs import invalid_input
from shopfloor.kinds.pipeline.health import CommandChecks, check_health
from shopfloor.kinds.pipeline.models import Probe, ServiceHandle, ServiceRef, StopReport
from shopfloor.kinds.pipeline.runtime import current_job, job_running

log = logging.getLogger("shopfloor.pipeline")

LABEL_PIPELINE = "shopfloor.pipeline"
LABEL_SERVICE = "shopfloor.service"
LABEL_RUN = "shopfloor.run"
LABEL_STACK = "shopfloor.stack"  # set by workers (their runtime directory's digest)
LABEL_JOB = "shopfloor.job"  # the workflow id of the run that made the container
LOG_TAIL_LINES = 50
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

P = ParamSpec("P")
R = TypeVar("R")

# Phrases of the engine's pull errors that mean no registry could be reached at all (DNS,
# routing, a proxy or firewall), as opposed to a registry that answered "no such image".
_UNREACHABLE = (
    "no such host",
    "dial tcp",
    "connection refused",
    "network is unreachable",
    "i/o timeout",
    "tls handshake timeout",
    "temporary failure in name resolution",
    "server misbehaving",
)


class DockerEngineUnavailable(RuntimeError):
    """No Docker engine answers at the configured address."""


class ImageUnavailable(RuntimeError):
    """The image is not on the engine and pulling it failed."""


@dataclass(frozen=True)
class EngineAddress:
    """Where the worker looks for its Docker engine, and which setting said so (errors name
    both: the fix is usually that setting)."""

    url: str
    source: str

    def __str__(self) -> str:
        return f"{self.url} ({self.source})"


def engine_address(configured: str | None) -> EngineAddress:
    if configured:
        return EngineAddress(configured, "SHOPFLOOR_PIPELINE_DOCKER_HOST")
    if os.environ.get("DOCKER_HOST"):
        return EngineAddress(os.environ["DOCKER_HOST"], "DOCKER_HOST")
    return EngineAddress(
        DEFAULT_DOCKER_HOST, "the default; set SHOPFLOOR_PIPELINE_DOCKER_HOST or DOCKER_HOST"
    )


def connector(address: EngineAddress) -> Callable[[], docker.DockerClient]:
    def connect() -> docker.DockerClient:
        if address.source == "DOCKER_HOST":
            return docker.from_env()  # also DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
        return docker.DockerClient(base_url=address.url)

    return connect


def _reason(err: BaseException) -> str:
    """The innermost OS error behind a `requests`/`urllib3` failure ("No such file or
    directory", "Connection refused"), else the error's own text."""
    seen: set[int] = set()
    todo: list[object] = [err]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None and e.strerror:
            return e.strerror
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
    return str(err)


def container_name(ref: ServiceRef, stack: str = "") -> str:
    base = f"shopfloor-{ref.pipeline}-{ref.service.name}"
    return f"{base}-{stack[:8]}" if stack else base


def labels_of(ref: ServiceRef, stack: str = "", job: str = "") -> dict[str, str]:
    labels = {
        LABEL_PIPELINE: ref.pipeline,
        LABEL_SERVICE: ref.service.name,
        LABEL_RUN: ref.run_token,
    }
    if stack:
        labels[LABEL_STACK] = stack
    if job:
        labels[LABEL_JOB] = job
    return labels


def _split_image(image: str) -> tuple[str, str]:
    # "registry:5000/grafana/loki:3.0" → ("registry:5000/grafana/loki", "3.0"); a digest pins.
    if "@" in image:
        return image, ""
    repo, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return repo, tag


def _stream_error(output: object) -> str | None:
    """The last `{"error": …}` line of a pull's progress stream, if any."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else str(output or "")
    found = None
    for line in text.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            found = str(message["error"])
    return found


def _described(ref: ServiceRef, found: dict[str, Any]) -> str:
    labels = found.get("Labels") or {}
    job = labels.get(LABEL_JOB)
    run = labels.get(LABEL_RUN, "?") + (f", job {job}" if job else "")
    return f"{ref.service.name} container {found['Id'][:12]} of an earlier run ({run})"


def _port_key(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    return int(port), proto or "tcp"


class DockerRuntime:
    def __init__(
        self,
        connect: Callable[[], docker.DockerClient],
        *,
        checks: CommandChecks | None = None,
        address: EngineAddress | str = "the configured address",
        host_network: bool = False,
        volume_roots: Sequence[Path] = (),
        stack: str = "",
    ) -> None:
        # Connecting is lazy: a worker whose pipelines use no containers needs no engine.
        self._connect = connect
        # Which stack's containers are this runtime's ("": any, as before stacks were told apart).
        self.stack = stack
        self.checks = checks  # health-check commands run on this host, contained
        self.address = address
        # What a definition may ask of the engine beyond a container of its own (settings
        # PIPELINE_DOCKER_HOST_NETWORK and PIPELINE_DOCKER_VOLUME_ROOTS: the operator's).
        self.host_network = host_network
        self.volume_roots = [Path(r).resolve() for r in volume_roots]
        self._client: docker.DockerClient | None = None
        self._lock = asyncio.Lock()

    def _unavailable(self, err: BaseException) -> DockerEngineUnavailable:
        return DockerEngineUnavailable(f"no Docker engine at {self.address}: {_reason(err)}")

    async def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except requests.exceptions.ConnectionError as err:
            # The engine went away after we connected (stopped, restarted, socket removed).
            raise self._unavailable(err) from None

    async def _api(self) -> docker.APIClient:
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await self._call(self._connect)
                except DockerException as err:
                    # The SDK asks the engine its API version on connect: "Error while fetching
                    # server API version: ('Connection aborted.', FileNotFoundError(2, …))".
                    raise self._unavailable(err) from None
        return self._client.api

    async def aclose(self) -> None:
        if self._client is not None:
            await self._call(self._client.close)

    async def _containers(self, ref: ServiceRef) -> list[dict[str, Any]]:
        """Every container of this pipeline's service, of any run, running or not."""
        api = await self._api()
        wanted = [f"{LABEL_PIPELINE}={ref.pipeline}", f"{LABEL_SERVICE}={ref.service.name}"]
        if self.stack:
            wanted.append(f"{LABEL_STACK}={self.stack}")
        return await self._call(api.containers, all=True, filters={"label": wanted})

    async def _earlier(self, ref: ServiceRef, found: dict[str, Any], *, starting: bool) -> bool:
        """Whether `found` (another run's container of this service) is a leftover to remove:
        yes unless the job that made it still runs (then a start is refused, naming it)."""
        labels = found.get("Labels") or {}
        job = labels.get(LABEL_JOB, "")
        if not job or job == current_job() or not await job_running(job):
            return True
        if starting:
            raise invalid_input(
                f"pipeline {ref.pipeline!r} is already running on this engine as job {job!r} "
                f"(its {ref.service.name} is container {found['Id'][:12]}): stop that job first"
            )
        return False

    def _said(self, ref: ServiceRef, removed: list[str]) -> list[str]:
        if removed:
            what = "; ".join(removed)
            log.warning("removed what earlier runs of pipeline %r left: %s", ref.pipeline, what)
        return removed

    async def _mine(self, ref: ServiceRef) -> dict[str, Any] | None:
        for found in await self._containers(ref):
            if (found.get("Labels") or {}).get(LABEL_RUN) == ref.run_token:
                return found
        return None

    # -- the runtime interface ----------------------------------------------------------------

    async def start(self, ref: ServiceRef) -> ServiceHandle:
        api = await self._api()
        adopted = False
        container_id = None
        removed = []
        for found in await self._containers(ref):
            labels = found.get("Labels") or {}
            if labels.get(LABEL_RUN) == ref.run_token:
                container_id, adopted = found["Id"], True
            elif await self._earlier(ref, found, starting=True):
                # Left by an earlier run of this pipeline (terminated, crashed): it holds the
                # name, and maybe the ports.
                await self._call(api.remove_container, found["Id"], force=True)
                removed.append(_described(ref, found))
        if container_id is None:
            container_id = await self._create(api, ref)
        state = (await self._call(api.inspect_container, container_id))["State"]
        if not state.get("Running"):
            await self._call(api.start, container_id)
        return ServiceHandle(
            container_id=container_id, adopted=adopted, leftovers=self._said(ref, removed)
        )

    def refusal(self, ref: ServiceRef) -> str | None:
        """Why this worker will not create the service's container (None: it will)."""
        spec = ref.service
        if spec.network == "host" and not self.host_network:
            return (
                f"{spec.name}: network: host is not allowed on this worker (the container "
                "would run as root on the host's network, Temporal's and the controller's "
                "loopback included); the operator opens it with "
                "SHOPFLOOR_PIPELINE_DOCKER_HOST_NETWORK=true"
            )
        for host in spec.volumes:
            path = Path(host).resolve()
            if not any(path == r or path.is_relative_to(r) for r in self.volume_roots):
                return (
                    f"{spec.name}: volume {host!r} is not under a directory this worker lets "
                    "containers bind (SHOPFLOOR_PIPELINE_DOCKER_VOLUME_ROOTS: "
                    f"{[str(r) for r in self.volume_roots]})"
                )
        return None

    async def _create(self, api: docker.APIClient, ref: ServiceRef) -> str:
        spec = ref.service
        assert spec.image, "docker services have an image (the model checks)"
        if (refused := self.refusal(ref)) is not None:
            raise PermissionError(refused)  # the start fails at once, not retried
        await self._pull_if_missing(api, spec.image)
        host_config = api.create_host_config(
            port_bindings={port: host for port, host in spec.ports.items()},
            binds={host: {"bind": inside, "mode": "rw"} for host, inside in spec.volumes.items()},
            network_mode=spec.network,
        )
        try:
            created = await self._call(
                api.create_container,
                spec.image,
                command=spec.command,
                name=container_name(ref, self.stack),
                environment=spec.env,
                labels=labels_of(ref, self.stack, current_job()),
                ports=[_port_key(k) for k in spec.ports],
                host_config=host_config,
            )
            created_id: str = created["Id"]
            return created_id
        except APIError as err:
            if err.status_code != 409:
                raise
        # Conflict: the name is taken. Ours (a create that raced this one) is adopted;
        # anything else is not ours to remove.
        name = container_name(ref, self.stack)
        existing = await self._call(api.inspect_container, name)
        labels = existing["Config"].get("Labels") or {}
        if labels.get(LABEL_RUN) != ref.run_token:
            raise RuntimeError(
                f"container name {name!r} is taken by a container that is not "
                f"this pipeline's ({existing['Id'][:12]})"
            )
        existing_id: str = existing["Id"]
        return existing_id

    async def _pull_if_missing(self, api: docker.APIClient, image: str) -> None:
        if await self._has_image(api, image):
            return
        repo, tag = _split_image(image)
        try:
            output = await self._call(api.pull, repo, tag=tag or None)
            # A pull that fails once the engine has begun answering still answers 200: the
            # error is a line of the progress stream, which the SDK does not raise.
            failure = _stream_error(output)
        except APIError as err:
            failure = str(err.explanation or err)
        if failure is None and await self._has_image(api, image):
            return
        failure = failure or "the pull finished but the engine still has no such image"
        if any(phrase in failure.lower() for phrase in _UNREACHABLE):
            hint = (
                "no registry was reachable from the engine: build or load the image there "
                "(`docker build`, `docker load`, `docker import`), or give it registry access"
            )
        else:
            hint = "check the image's name and tag, and the engine's registry credentials"
        raise ImageUnavailable(
            f"image {image!r} is not on the Docker engine at {self.address} and pulling it "
            f"failed: {failure} ({hint})"
        )

    async def _has_image(self, api: docker.APIClient, image: str) -> bool:
        try:
            await self._call(api.inspect_image, image)
            return True
        except NotFound:
            return False

    async def probe(self, ref: ServiceRef) -> Probe:
        api = await self._api()
        found = await self._mine(ref)
        if found is None:
            return Probe(alive=False, healthy=False, error="no container")
        info = await self._call(api.inspect_container, found["Id"])
        state = info["State"]
        cid = info["Id"]
        if not state.get("Running"):
            status = state.get("Status", "stopped")
            return Probe(
                alive=False,
                healthy=False,
                error=f"container {status} (exit code {state.get('ExitCode')})",
                container_id=cid,
                log_tail=await self._logs(api, cid),
            )
        if ref.service.health:
            error = await check_health(ref.service.health, commands=self.checks)
        elif state.get("Health"):  # the image's own HEALTHCHECK
            status = state["Health"].get("Status")
            error = None if status == "healthy" else f"container health: {status}"
        else:
            error = None
        tail = await self._logs(api, cid) if error else ""
        return Probe(
            alive=True, healthy=error is None, error=error, container_id=cid, log_tail=tail
        )

    async def stop(self, ref: ServiceRef) -> StopReport:
        api = await self._api()
        was_running = False
        removed = []
        for found in await self._containers(ref):
            mine = (found.get("Labels") or {}).get(LABEL_RUN) == ref.run_token
            if not mine and not await self._earlier(ref, found, starting=False):
                continue  # another job's live run of this pipeline
            info = await self._call(api.inspect_container, found["Id"])
            if info["State"].get("Running"):
                was_running = True
                await self._call(api.stop, found["Id"], timeout=int(ref.service.stop_timeout_s))
                if not mine:
                    removed.append(_described(ref, found))
            try:
                await self._call(api.remove_container, found["Id"], force=True)
            except NotFound:
                pass
        return StopReport(was_running=was_running, leftovers=self._said(ref, removed))

    async def log_tail(self, ref: ServiceRef) -> str:
        found = await self._mine(ref)
        return await self._logs(await self._api(), found["Id"]) if found else ""

    async def _logs(self, api: docker.APIClient, container_id: str) -> str:
        try:
            raw = await self._call(api.logs, container_id, tail=LOG_TAIL_LINES)
        except APIError as err:
            return f"(no logs: {err})"
        return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
