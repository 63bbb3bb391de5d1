"""docker-compose.yml as Docker Compose reads it (`docker compose config`, or Debian's
`docker-compose config`): no stack runs, but the file parses, refuses to start without an API
token, pins every image and has Prometheus scraping the workers' metrics."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"


def _compose() -> list[str]:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    if found := shutil.which("docker-compose"):
        return [found]
    pytest.skip(
        "neither the `docker compose` plugin nor `docker-compose` is installed "
        "(scripts/install-system-deps.sh installs Debian's docker-compose)"
    )


def unpinned(services: dict) -> list[str]:
    """Services whose image has no tag, or `latest` (a digest would pin too)."""
    found = []
    for name, service in services.items():
        image = service["image"]
        last = image.rpartition("/")[2]
        tag = last.rpartition(":")[2] if ":" in last else ""
        if "@" not in image and tag in ("", "latest"):
            found.append(f"{name}: {image}")
    return found


def config(token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHOPFLOOR_API_TOKEN"}
    if token is not None:
        env["SHOPFLOOR_API_TOKEN"] = token
    return subprocess.run(
        [*_compose(), "-f", str(COMPOSE_FILE), "config"],
        env=env, capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip


@pytest.mark.parametrize("token", [None, ""], ids=["unset", "empty"])
def test_no_stack_without_an_api_token(token: str | None) -> None:
    result = config(token)
    assert result.returncode != 0, result.stdout
    assert "set SHOPFLOOR_API_TOKEN to a long random secret" in result.stderr, result.stderr


def test_images_pinned_worker_metrics_on_and_prometheus_scraping_them() -> None:
    result = config("a-token-for-the-test")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert unpinned(services) == []
    for name in ("controller", "worker", "prometheus"):
        assert services[name]["environment"]["SHOPFLOOR_API_TOKEN"] == "a-token-for-the-test"
    worker = services["worker"]["environment"]
    port = int(worker["SHOPFLOOR_WORKER_METRICS_PORT"])
    assert port > 0 and worker["SHOPFLOOR_WORKER_METRICS_HOST"] == "0.0.0.0"

    mounts = [str(v.get("source", v) if isinstance(v, dict) else v) for v in
              services["prometheus"]["volumes"]]  # fmt: skip
    assert any("deploy/prometheus.yml" in m for m in mounts), mounts
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    workers = jobs["shopfloor-workers"]["dns_sd_configs"][0]
    assert workers["names"] == ["worker"] and workers["port"] == port
    assert jobs["shopfloor-controller"]["static_configs"][0]["targets"] == ["controller:8000"]


def test_the_check_sees_a_floating_tag(tmp_path: Path) -> None:
    """The pin check above is not vacuous: `latest` in a copy of the file is caught."""
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(COMPOSE_FILE.read_text().replace("postgres:16.3", "postgres:latest"))
    env = {**os.environ, "SHOPFLOOR_API_TOKEN": "t"}
    out = subprocess.run(
        [*_compose(), "-f", str(copy), "--project-directory", str(REPO), "config"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert unpinned(yaml.safe_load(out.stdout)["services"]) == ["postgresql: postgres:latest"]
