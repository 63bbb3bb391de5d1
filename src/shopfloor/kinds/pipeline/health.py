"""Health checks: an HTTP status, an accepting TCP port, or a command that exits 0."""

from __future__ import annotations

import asyncio

import httpx

from shopfloor.kinds.pipeline.models import HealthCheck


async def check_health(check: HealthCheck) -> str | None:
    """None when healthy, else what was wrong (one line: it ends up in status and errors)."""
    try:
        if check.http:
            return await _http(check.http, check.expect_status, check.timeout_s)
        if check.tcp:
            return await _tcp(check.tcp, check.timeout_s)
        assert check.command
        return await _command(check.command, check.timeout_s)
    except TimeoutError:
        return f"{check.kind} check timed out after {check.timeout_s:g}s"
    except OSError as err:
        return f"{check.kind} check: {err.strerror or err}"


async def _http(url: str, expect: int, timeout_s: float) -> str | None:
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
        try:
            response = await http.get(url)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as err:
            return f"GET {url}: {type(err).__name__}: {err}"
    if response.status_code != expect:
        return f"GET {url}: status {response.status_code}, expected {expect}"
    return None


async def _tcp(address: str, timeout_s: float) -> str | None:
    host, _, port = address.rpartition(":")
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    writer.close()
    await writer.wait_closed()
    return None


async def _command(argv: list[str], timeout_s: float) -> str | None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        last = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"{argv[0]} exited {proc.returncode}: {last[0][:200]}".rstrip(": ")
    return None
