"""An S3 endpoint for tests: moto's server on 127.0.0.1 (real HTTP, in this process), one fresh
bucket per test module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.helpers import free_port

KEYS = {"aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3_bucket(s3_endpoint: str) -> str:
    name = f"shopfloor-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **KEYS)
    client.create_bucket(Bucket=name)
    return name


def s3_env(endpoint: str, bucket: str, prefix: str = "artifacts") -> dict[str, str]:
    """The settings (as environment) of a controller or worker using that bucket."""
    return {
        "SHOPFLOOR_ARTIFACTS": f"s3://{bucket}/{prefix}",
        "SHOPFLOOR_S3_ENDPOINT_URL": endpoint,
        "SHOPFLOOR_S3_REGION": "us-east-1",
        "SHOPFLOOR_S3_ACCESS_KEY_ID": KEYS["aws_access_key_id"],
        "SHOPFLOOR_S3_SECRET_ACCESS_KEY": KEYS["aws_secret_access_key"],
    }
