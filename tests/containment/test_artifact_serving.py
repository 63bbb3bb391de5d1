"""Artifact serving through HTTP (a real controller with a token): safe headers, attachment
for what a browser could run, no symlink followed, Range for video, signed links that work
without the token and stop working when they expire; docs behind the same auth."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from shopfloor.controller.links import artifact_url, link_signature
from shopfloor.controller.routes import docs
from shopfloor.devserver import DevServer
from shopfloor.settings import Settings
from tests.helpers import Stack

TOKEN = "s3cret-for-tests"


@pytest.fixture(scope="module")
def controller(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("serving"),
        extra_env={"SHOPFLOOR_API_TOKEN": TOKEN},
    )
    s.start_controller()
    yield s
    s.stop()


def _store(controller: Stack) -> Path:
    root = Path(controller.env["SHOPFLOOR_DATA_DIR"]) / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _settings(controller: Stack) -> Settings:
    return Settings(api_token=TOKEN, controller_port=controller.port)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_headers_and_disposition(controller: Stack) -> None:
    job = _store(controller) / "job-serve"
    job.mkdir()
    files = {
        "page.html": ("text/html", "attachment"),
        "pic.svg": ("image/svg+xml", "attachment"),
        "app.js": ("javascript", "attachment"),
        "data.xml": ("xml", "attachment"),
        "blob.weird": ("application/octet-stream", "attachment"),
        "clip.mp4": ("video/mp4", "inline"),
        "pic.png": ("image/png", "inline"),
        "notes.txt": ("text/plain", "inline"),
    }
    for name in files:
        (job / name).write_bytes(b"<script>alert(1)</script>" * 10)
    for name, (media, disposition) in files.items():
        r = controller.http.get(f"/artifacts/job-serve/{name}", headers=AUTH)
        assert r.status_code == 200, (name, r.text)
        assert media in r.headers["content-type"], (name, r.headers)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == "sandbox"
        assert r.headers["content-disposition"].startswith(disposition), (name, r.headers)
    ranged = controller.http.get(
        "/artifacts/job-serve/clip.mp4", headers={**AUTH, "Range": "bytes=0-9"}
    )
    assert ranged.status_code == 206 and ranged.content == b"<script>al"
    assert controller.http.get("/artifacts/job-serve/clip.mp4").status_code == 401


def test_symlinks_in_the_store_are_never_followed(controller: Stack, tmp_path: Path) -> None:
    root = _store(controller)
    (root / "job-links").mkdir()
    (root / "job-links" / "shadow").symlink_to("/etc/shadow")
    (root / "job-links" / "passwd").symlink_to("/etc/passwd")
    (root / "job-dirlink").symlink_to("/etc")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "job-links" / "sub").mkdir()
    os.link(outside, root / "job-links" / "sub" / "hard.txt")  # a hard link is a real file
    for path in ("job-links/shadow", "job-links/passwd", "job-dirlink/passwd", "../etc/passwd"):
        r = controller.http.get(f"/artifacts/{path}", headers=AUTH)
        assert r.status_code in (404, 422), (path, r.status_code, r.text)
        assert "root:" not in r.text


def test_signed_links_work_without_the_token_and_expire(controller: Stack) -> None:
    up = controller.http.put("/uploads/clip.mp4", content=b"\x00\x00\x00\x18ftypmp42", headers=AUTH)
    assert up.status_code == 201, up.text
    url = up.json()["url"]
    assert "sig=" in url and TOKEN not in url
    # What a browser does with a link: a plain GET, no Authorization header.
    browser = httpx.get(url)
    assert browser.status_code == 200 and browser.content.startswith(b"\x00\x00\x00\x18ftyp")
    assert browser.headers["content-disposition"].startswith("inline")
    tampered = url.replace("clip.mp4", "other.mp4")
    assert httpx.get(tampered).status_code == 403
    settings = _settings(controller)
    path = up.json()["uri"].removeprefix("artifact://")
    short = artifact_url(settings, up.json()["uri"], ttl_s=2)
    assert httpx.get(short).status_code == 200
    time.sleep(3.1)
    expired = httpx.get(short)
    assert expired.status_code == 403 and "expired" in expired.text
    past = int(time.time()) - 1
    forged = (
        f"{controller.url}/artifacts/{path}?exp={past}&sig={link_signature(settings, path, past)}"
    )
    assert httpx.get(forged).status_code == 403


def test_an_empty_token_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match="SHOPFLOOR_API_TOKEN is set but empty"):
        Settings(api_token="")
    with pytest.raises(ValidationError, match="empty"):
        Settings(api_token="   ")


def test_docs_and_schema_follow_the_api_auth() -> None:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = Settings(api_token=TOKEN)
    app.include_router(docs.router)
    client = TestClient(app)
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/docs").status_code == 401
    assert client.get("/openapi.json", headers=AUTH).json()["info"]["title"] == "FastAPI"
    # The doc page takes no token in its URL (issue 20): the header (or a session) only.
    assert client.get("/docs", params={"token": TOKEN}).status_code == 401
    page = client.get("/docs", headers=AUTH)
    assert page.status_code == 200 and "token=" not in page.text
