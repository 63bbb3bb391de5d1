"""The dashboard's compressed static files decode to the vendored build for every client."""

from __future__ import annotations

import gzip

from fastapi import FastAPI
from fastapi.testclient import TestClient

from shopfloor.controller.dashboard import STATIC
from shopfloor.controller.dashboard._static import PrecompressedFiles


def client() -> TestClient:
    app = FastAPI()
    app.mount("/s", PrecompressedFiles(directory=STATIC))
    return TestClient(app)


def test_htmx_is_served_compressed_to_browsers_and_plain_to_others() -> None:
    plain = gzip.decompress((STATIC / "htmx.min.js.gz").read_bytes())
    assert plain.startswith(b"var htmx=function()")
    with client() as http:
        zipped = http.get("/s/htmx.min.js", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["content-type"].startswith(
            ("text/javascript", "application/javascript")
        )
        assert zipped.content == plain  # the client decoded it
        bare = http.get("/s/htmx.min.js", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in bare.headers
        assert bare.content == plain
        assert http.get("/s/dashboard.css").status_code == 200  # uncompressed files as before
        assert http.get("/s/missing.js").status_code == 404
