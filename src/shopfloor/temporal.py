"""Connecting to Temporal the same way from the controller, the workers, the CLI and tests."""

from __future__ import annotations

import asyncio
import time

from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter

from shopfloor.settings import Settings


async def connect(settings: Settings) -> Client:
    """A client speaking plain JSON (pydantic converter): any SDK or the CLI interoperates."""
    tls: TLSConfig | bool = False
    if settings.tls_cert or settings.tls_ca:
        tls = TLSConfig(
            client_cert=settings.tls_cert.read_bytes() if settings.tls_cert else None,
            client_private_key=settings.tls_key.read_bytes() if settings.tls_key else None,
            server_root_ca_cert=settings.tls_ca.read_bytes() if settings.tls_ca else None,
        )
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    if api_key and tls is False:
        tls = True  # Temporal Cloud's API-key auth is TLS-only.
    return await Client.connect(
        settings.target_address,
        namespace=settings.namespace,
        data_converter=pydantic_data_converter,
        tls=tls,
        api_key=api_key,
    )


async def connect_with_retry(settings: Settings, *, wait_s: float = 30.0) -> Client:
    """Connects, retrying while the server is starting (embedded stack, compose start-up)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await connect(settings)
        except RuntimeError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.25)
