"""The shared configuration: a pydantic-settings object read from `SHOPFLOOR_*`.

Each job kind declares its own settings, a BaseSettings with its own env_prefix in its own
folder (e.g. `SHOPFLOOR_PIPELINE_*`), read through `Settings.of(model)`: this file names no kind.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, TypedDict, TypeVar, cast

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KindSettings = TypeVar("KindSettings", bound=BaseSettings)


class S3Options(TypedDict):
    """The S3 artifact store's arguments (`Settings.s3_settings`)."""

    url: str
    endpoint_url: str | None
    public_endpoint_url: str | None
    region: str | None
    access_key_id: str | None
    secret_access_key: str | None
    multipart_threshold: int
    multipart_chunksize: int


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOPFLOOR_", env_file=".env", extra="ignore")

    # Unset → `shopfloor up` starts an embedded dev server on `dev_server_port`.
    temporal_address: str | None = None
    namespace: str = "default"
    data_dir: Path = Path(".shopfloor")

    dev_server_port: int = 7233
    dev_ui_port: int = 8233

    controller_host: str = "127.0.0.1"
    controller_port: int = 8000
    # Base URL clients use to reach the controller (for links in results and the CLI).
    controller_url: str | None = None
    # Largest request body the controller takes (uploads have their own limit).
    max_request_mb: int = Field(32, ge=1, le=4096)
    # When set, every controller route except /healthz needs `Authorization: Bearer <token>`.
    api_token: SecretStr | None = None
    # Host names the controller answers to (the Host header; DNS rebinding sends another);
    # the host of SHOPFLOOR_CONTROLLER_URL and a specific SHOPFLOOR_CONTROLLER_HOST are added.
    # "*" answers any (behind a proxy that checks it).
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"]
    )
    # Without a token the controller listens on loopback only; true lets it listen elsewhere
    # open to anyone who reaches it (docs/security.md).
    allow_open_api: bool = False

    # Production: mTLS to a self-hosted cluster, or an API key for Temporal Cloud.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    temporal_api_key: SecretStr | None = None

    # Where artifacts live; defaults to <data_dir>/artifacts. Shared by workers and controller.
    artifact_dir: Path | None = None
    # The shared artifact store: `s3://bucket/prefix` (AWS S3 or any S3-compatible service)
    # for workers on many machines; unset (or a directory) → the local directory above.
    artifacts: str | None = None
    # S3-compatible services (MinIO, Ceph…): the endpoint workers and controller use, and the
    # one browsers reach for presigned links (default: the same).
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_region: str | None = None
    # Unset → boto3's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, config, roles).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    # Files over the threshold go up in parts of this size (S3's smallest part is 5 MiB).
    s3_multipart_threshold_mb: float = Field(8, gt=0)
    s3_multipart_chunk_mb: float = Field(8, ge=5)

    # Prepended to every kind's task queue: isolates test runs or tenants on one cluster.
    task_queue_prefix: str = ""
    # Job kinds this worker process serves (names from the registry); empty → all.
    worker_kinds: list[str] = Field(default_factory=list)
    # Activity slots per task queue in one worker process, unless a kind sets its own…
    worker_max_concurrent_activities: int = 8
    # …or this names it: {"<kind>": slots} (e.g. few simulations, many LLM calls).
    worker_concurrency: dict[str, int] = Field(default_factory=dict)
    # Extra modules defining a `KIND` (job kinds that live outside this package).
    kind_modules: list[str] = Field(default_factory=list)

    # Egress (shopfloor.egress): requests made on a job's behalf (phased `http` steps, gateway
    # and model URLs) never reach loopback, private, link-local or metadata addresses unless
    # named here: hosts, addresses or CIDRs, optionally with a port, comma-separated
    # (`127.0.0.1:18789,10.0.0.0/8`). The control plane's ports stay shut whatever is named.
    egress_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # More ports of this deployment that jobs must never reach on an internal address (the
    # stack lists every worker's metrics port here).
    egress_deny_ports: Annotated[list[int], NoDecode] = Field(default_factory=list)

    # More loopback ports no run or pipeline service may reach (e.g. the metrics ports of the
    # other workers of a stack): the frontend, controller, UI and own metrics port always.
    sandbox_protected_ports: list[int] = Field(default_factory=list)

    # Containing user code (scripts, scenes): see the README, "What contains a run".
    # Runs get uids from this range (no /etc/passwd entries needed) when the worker is root.
    sandbox_uid_base: int = Field(200000, ge=1000)
    sandbox_uid_count: int = Field(1000, ge=1, le=1_000_000)
    # Where each worker keeps its runs' directories (default: the system's temp dir).
    sandbox_root: Path | None = None
    # Bytes a run may have in its work dir, out/ included, unless the job asks for another
    # amount (up to max_job_disk_mb, below).
    sandbox_disk_mb: int = Field(1024, ge=1)
    # Size of each run's own /tmp and /dev/shm (in memory, charged to the run's memory cgroup).
    sandbox_tmp_mb: int = Field(64, ge=1)
    # Directories bound read-write, at their own paths, into every run's otherwise minimal
    # root: a scratch or data directory the operator means runs to share. None by default:
    # whatever is listed here, every run may read and write.
    sandbox_shared_dirs: list[Path] = Field(default_factory=list)
    # `network: "host"` runs: each run uid a network namespace of its own, on a /30 of this
    # range (4 addresses per uid of the pool), let out by NAT.
    sandbox_veth_cidr: str = "10.213.0.0/16"
    # Jobs asking for `network: host` are refused unless the worker can filter it (iptables:
    # no loopback, no Temporal frontend, no controller); true lets them run unfiltered.
    sandbox_unfiltered_network: bool = False
    # A run whose activity attempt Temporal lost while it went on (a server away longer than
    # the heartbeat timeout) is kept this long for the next attempt on this worker to adopt,
    # instead of the user's code starting again; then killed. 0: no adoption.
    adoption_window_s: float = Field(60.0, ge=0, le=3600)
    # Scripts and simulations start as local activities, in the worker that runs the job's
    # workflow task: a short run costs one workflow task and no activity dispatch. A run still
    # going after this long is handed to a heartbeating activity on this worker's own task
    # queue, which takes it over as it runs. 0 (or no adoption): every run starts in that
    # activity.
    handoff_after_s: float = Field(1.0, ge=0, le=60)
    # -- Ceilings on what a job may ask for, and on what it may leave (issue 19) ---------------
    # The most a script or simulation job may ask for, whichever client started it: the
    # controller answers 422 above them, and a worker fails such a job at once (non-retryable)
    # by its own values, never trusting that a controller checked. Sized for a 2-core, 24 GB
    # worker running a few jobs at once; raise them on bigger machines.
    max_job_memory_mb: int = Field(8192, ge=64)
    max_job_processes: int = Field(256, ge=1)
    max_job_timeout_s: float = Field(6 * 3600, gt=0)
    # A job may ask for up to this much disk (`disk_mb`); one that asks for none gets
    # `sandbox_disk_mb`.
    max_job_disk_mb: int = Field(10 * 1024, ge=1)
    # Files a run may leave in out/ to become artifacts; more (or more bytes than its disk cap,
    # by apparent size) and the run fails with reason `disk`, storing nothing.
    max_artifacts: int = Field(10_000, ge=1)

    def over_ceiling(self, job: object) -> str | None:
        """Why `job` (any kind's input) asks for more than this deployment allows, naming the
        field and the ceiling; None when it does not. Fields a kind has not are not checked."""
        ceilings = {
            "memory_mb": (self.max_job_memory_mb, "MAX_JOB_MEMORY_MB"),
            "max_processes": (self.max_job_processes, "MAX_JOB_PROCESSES"),
            "timeout_s": (self.max_job_timeout_s, "MAX_JOB_TIMEOUT_S"),
            "disk_mb": (self.max_job_disk_mb, "MAX_JOB_DISK_MB"),
        }
        for name, (ceiling, setting) in ceilings.items():
            asked = getattr(job, name, None)
            if asked is not None and asked > ceiling:
                return (
                    f"{name}: {asked:g} is over this deployment's ceiling of {ceiling:g} "
                    f"(SHOPFLOOR_{setting})"
                )
        return None

    # Signed artifact links (for browsers, when api_token is set): key (default: derived from
    # api_token) and lifetime.
    link_secret: SecretStr | None = None
    link_ttl_s: int = Field(3600, ge=10, le=7 * 24 * 3600)
    # Job input larger than this travels through the artifact store (Temporal's payload limit
    # is 2 MB): the controller moves large inline fields there and passes references.
    inline_input_max_kb: int = Field(256, ge=16, le=1536)

    # Operations (docs/operations.md). The Temporal UI the dashboard links every job to
    # (default: the embedded dev server's UI when embedded, else no links).
    temporal_ui_url: str | None = None
    # Prometheus /metrics of a worker process on this port (0: off): the Temporal SDK's
    # runtime metrics and shopfloor's job metrics on one endpoint.
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    # The controller's /metrics alone on a port of its own (0: off), without the API token:
    # what a scraper may reach without reaching the API (docs/operations.md, "Monitoring").
    controller_metrics_port: int = Field(0, ge=0, le=65535)
    controller_metrics_host: str = "127.0.0.1"
    # The one pipeline definition (by name, from the definition directories, unchanged) whose
    # process services may connect to the metrics ports over loopback — and to nothing else of
    # the control plane. "" (default): no pipeline may (docs/security.md).
    monitoring_pipeline: str = ""
    # The group its services run as (outside the pool's range): what the network filter lets
    # through to the metrics ports.
    monitoring_gid: int = Field(199999, ge=1000)
    # OpenTelemetry traces go to this OTLP/HTTP endpoint (e.g. http://collector:4318) when set.
    otlp_endpoint: str | None = None
    # "text" or "json" (one JSON object a line, with job/workflow/run ids inside jobs).
    log_format: str = Field("text", pattern="^(text|json)$")
    # How often one dashboard page's live stream asks Temporal for changes.
    dashboard_poll_s: float = Field(1.0, ge=0.2, le=60)
    # Signs dashboard session cookies (default: derived from api_token).
    session_secret: SecretStr | None = None
    session_ttl_s: int = Field(12 * 3600, ge=60, le=30 * 24 * 3600)

    # The kinds' own settings, read once per Settings (see `of`).
    _kinds: dict[type[BaseSettings], BaseSettings] = PrivateAttr(default_factory=dict)

    def of(self, model: type[KindSettings]) -> KindSettings:
        """A kind's own settings, read from the environment (and `.env`) by its own prefix the
        first time this Settings is asked, unless `with_kind` gave them."""
        if model not in self._kinds:
            self._kinds[model] = model()
        return cast(KindSettings, self._kinds[model])

    def with_kind(self, *given: BaseSettings) -> Settings:
        """A copy whose kinds' settings are `given` rather than read from the environment
        (tests, and workers embedded in another program)."""
        copy = self.model_copy()
        copy._kinds = {**self._kinds, **{type(each): each for each in given}}
        return copy

    @field_validator("api_token")
    @classmethod
    def _token_not_empty(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not token.get_secret_value().strip():
            raise ValueError(
                "SHOPFLOOR_API_TOKEN is set but empty: unset it to run without auth, or set a "
                "token (an empty one would make every client send an illegal header)"
            )
        return token

    @field_validator("egress_allow", "egress_deny_ports", "allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part for part in text.replace(" ", ",").split(",") if part]
        return value

    @field_validator("egress_allow")
    @classmethod
    def _egress_entries(cls, entries: list[str]) -> list[str]:
        from shopfloor.egress import parse_allow

        parse_allow(entries)  # a bad entry stops the worker at start, naming it
        return entries

    @property
    def embedded(self) -> bool:
        return not self.temporal_address

    @property
    def target_address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.dev_server_port}"

    @field_validator("artifacts")
    @classmethod
    def _artifacts_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError(f"SHOPFLOOR_ARTIFACTS: s3://bucket/prefix or a directory: {value!r}")
        if value.startswith("s3://") and not value[len("s3://") :].split("/", 1)[0]:
            raise ValueError(f"SHOPFLOOR_ARTIFACTS: the s3:// URL names no bucket: {value!r}")
        return value

    @property
    def artifact_root(self) -> Path:
        """The local artifact directory (the store unless `artifacts` names S3)."""
        if self.artifacts and not self.artifacts.startswith("s3://"):
            return Path(self.artifacts.removeprefix("file://")).resolve()
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    def s3_settings(self) -> S3Options | None:
        """The S3 store's arguments when `artifacts` names a bucket, else None."""
        if not (self.artifacts and self.artifacts.startswith("s3://")):
            return None
        secret = self.s3_secret_access_key
        return {
            "url": self.artifacts,
            "endpoint_url": self.s3_endpoint_url,
            "public_endpoint_url": self.s3_public_endpoint_url,
            "region": self.s3_region,
            "access_key_id": self.s3_access_key_id,
            "secret_access_key": secret.get_secret_value() if secret else None,
            "multipart_threshold": int(self.s3_multipart_threshold_mb * 2**20),
            "multipart_chunksize": int(self.s3_multipart_chunk_mb * 2**20),
        }

    @property
    def temporal_ui(self) -> str | None:
        if self.temporal_ui_url:
            return self.temporal_ui_url.rstrip("/")
        return f"http://127.0.0.1:{self.dev_ui_port}" if self.embedded else None

    @property
    def controller_hosts(self) -> frozenset[str]:
        """The Host names (lowercase, no port, no brackets) the controller answers to."""
        from urllib.parse import urlsplit

        hosts = {h.strip("[]").lower() for h in self.allowed_hosts}
        if self.controller_url:
            hosts.add((urlsplit(self.controller_url).hostname or "").lower())
        if self.controller_host not in ("0.0.0.0", "::", ""):
            hosts.add(self.controller_host.strip("[]").lower())
        return frozenset(hosts - {""})

    @property
    def public_controller_url(self) -> str:
        if self.controller_url:
            return self.controller_url.rstrip("/")
        host = "127.0.0.1" if self.controller_host in ("0.0.0.0", "::") else self.controller_host
        return f"http://{host}:{self.controller_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
