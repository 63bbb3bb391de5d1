"""A pipeline's Docker services come from a definition whoever may start pipelines writes, and
their containers run as the engine's root: a host directory bound in (`volumes: {"/": …}`) or
the host's network (`network: host`, where Temporal and the controller listen on loopback)
would hand the worker's host to any client. Both are the operator's to open
(SHOPFLOOR_PIPELINE_DOCKER_VOLUME_ROOTS, SHOPFLOOR_PIPELINE_DOCKER_HOST_NETWORK); by default
the start fails at once naming the setting, and no container is made. Each attack runs
through a real worker, controller and the session's own dockerd, beside two innocent script
jobs (`run_with_innocents`). Before this policy both containers were created and started: the
first read the host's /etc/shadow, the second reached the controller.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import closing

import pytest

from shopfloor.devserver import DevServer
from shopfloor.kinds.pipeline.docker_runtime import LABEL_PIPELINE
from tests.containment.test_escapes import run_with_innocents
from tests.dockerd import BUSYBOX_IMAGE, PrivateDockerd
from tests.helpers import Stack


@pytest.fixture(scope="module")
def stack(
    dev_server: DevServer, docker_engine: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("docker-contain"),
        extra_env={"SHOPFLOOR_PIPELINE_DOCKER_HOST": docker_engine.url},
    )
    s.start_worker("--kind", "script", "--kind", "pipeline")
    s.start_controller()
    yield s
    s.stop()


ATTACKS = {
    "a host directory": (
        {"volumes": {"/": "/host"}, "network": "none", "command": ["cat", "/host/etc/shadow"]},
        "SHOPFLOOR_PIPELINE_DOCKER_VOLUME_ROOTS",
    ),
    "the host's network": (
        {"network": "host", "command": ["wget", "-qO-", "http://127.0.0.1:{port}/jobs"]},
        "SHOPFLOOR_PIPELINE_DOCKER_HOST_NETWORK",
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_definition_cannot_bind_the_host_or_use_its_network(
    stack: Stack, docker_engine: PrivateDockerd, attack: str
) -> None:
    spec, setting = ATTACKS[attack]
    spec = json.loads(json.dumps(spec).replace("{port}", str(stack.port)))
    name = f"dk{uuid.uuid4().hex[:8]}"
    job = {
        "definition": {
            "name": name,
            "services": [{"name": "svc", "image": BUSYBOX_IMAGE, "stop_timeout_s": 1, **spec}],
        }
    }
    box: dict = {}

    def during(innocents: list[str], script: dict) -> dict:
        box["result"] = stack.run("pipeline", job, wait_s=120)
        return script

    out = run_with_innocents(stack, {"source": "print('done')"}, on_running=during)
    assert out["exit_code"] == 0 and out["stdout_tail"] == "done\n", out
    result = box["result"]
    assert result["status"] == "FAILED", result
    assert setting in json.dumps(result), result
    with closing(docker_engine.client()) as engine:
        made = engine.containers.list(all=True, filters={"label": f"{LABEL_PIPELINE}={name}"})
    assert made == [], [c.name for c in made]
