"""The S3 backend on its own, against moto's server over HTTP: the same URIs and the same
collection rules as the local store, content-addressed uploads, multipart for large files,
ranges, presigned links a plain HTTP client opens; and the controller's routes on it (uploads
streamed into S3, names checked, objects streamed back with Range)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from shopfloor.artifacts import ArtifactError, LocalArtifactStore, store_for
from shopfloor.artifacts.s3 import RangeNotSatisfiable, S3ArtifactStore
from shopfloor.controller.app import create_app
from shopfloor.settings import Settings
from tests.artifacts.conftest import KEYS, s3_env

MiB = 1024 * 1024


def _settings(endpoint: str, bucket: str, prefix: str = "unit", **extra: object) -> Settings:
    env = s3_env(endpoint, bucket, prefix)
    return Settings(
        artifacts=env["SHOPFLOOR_ARTIFACTS"],
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_access_key_id=KEYS["aws_access_key_id"],
        s3_secret_access_key=KEYS["aws_secret_access_key"],
        **extra,
    )


@pytest.fixture
def store(s3_endpoint: str, s3_bucket: str) -> S3ArtifactStore:
    s = store_for(_settings(s3_endpoint, s3_bucket))
    assert isinstance(s, S3ArtifactStore)
    return s


def _raw(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **KEYS)


def test_put_read_and_uris_as_the_local_store(
    store: S3ArtifactStore, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    local = LocalArtifactStore(tmp_path / "local")
    assert isinstance(local, LocalArtifactStore)
    uri = store.put_bytes("job-1", "reports/a.json", b'{"a": 1}')
    assert uri == local.put_bytes("job-1", "reports/a.json", b'{"a": 1}')
    assert uri == "artifact://job-1/reports/a.json"
    assert store.read_bytes(uri) == b'{"a": 1}'
    # Where it is: <prefix>/<job>/<path>, typed for browsers.
    head = _raw(s3_endpoint).head_object(Bucket=s3_bucket, Key="unit/job-1/reports/a.json")
    assert head["ContentType"] == "application/json"
    src = tmp_path / "f.bin"
    src.write_bytes(b"file bytes")
    assert store.read_bytes(store.put_file("job-1", "f.bin", src)) == b"file bytes"
    with pytest.raises(ArtifactError, match="no such artifact"):
        store.read_bytes("artifact://job-1/missing.txt")
    for bad in ("artifact://job-1/../../etc/passwd", "artifact://job-1", "s3://x/y"):
        with pytest.raises(ArtifactError):
            store.read_bytes(bad)
    with pytest.raises(ArtifactError):
        store.put_bytes("job-1", "/abs", b"x")


def test_collect_tree_keeps_the_safety_rules(store: S3ArtifactStore, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = run / "out"
    (out / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (out / "ok.txt").write_text("fine")
    (out / "sub" / "deep.txt").write_text("deep")
    os.link(outside, out / "stolen.txt")
    (out / "shadow").symlink_to("/etc/shadow")
    (out / "etcdir").symlink_to("/etc")
    os.mkfifo(out / "fifo")
    (out / "bad\nname.txt").write_text("x")
    got = store.collect_tree("job-tree", out, run_dir=run)
    same = LocalArtifactStore(tmp_path / "local").collect_tree("job-tree", out, run_dir=run)
    assert got.uris == same.uris and got.refused == same.refused
    assert sorted(got.uris) == ["ok.txt", "sub/deep.txt"]
    assert store.read_bytes(got.uris["sub/deep.txt"]) == b"deep"
    assert got.refused["stolen.txt"] == "a hard link to a file outside the run"
    assert got.refused["shadow"].startswith("a symlink")
    assert got.refused["fifo"] == "not a regular file"
    with pytest.raises(ArtifactError):
        store.read_bytes("artifact://job-tree/stolen.txt")


def test_uploads_are_content_addressed(store: S3ArtifactStore, tmp_path: Path) -> None:
    a = store.put_upload("job.py", b"print(1)")
    assert a == store.put_upload("job.py", b"print(1)")
    assert a != store.put_upload("job.py", b"print(2)")
    src = tmp_path / "job.py"
    src.write_bytes(b"print(1)")
    assert store.put_upload_file("job.py", src) == a
    digest = hashlib.sha256(b"print(1)").hexdigest()
    assert store.put_upload_file("job.py", src, sha256=digest) == a
    assert a.startswith(f"artifact://uploads/{digest[:32]}/")
    assert store.read_bytes(a) == b"print(1)"


def test_large_files_go_up_in_parts(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    settings = _settings(
        s3_endpoint, s3_bucket, "multi", s3_multipart_threshold_mb=1, s3_multipart_chunk_mb=5
    )
    store = store_for(settings)
    big = tmp_path / "big.bin"
    data = os.urandom(12 * MiB + 123)
    big.write_bytes(data)
    uri = store.put_file("job-big", "big.bin", big)
    etag = _raw(s3_endpoint).head_object(Bucket=s3_bucket, Key="multi/job-big/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3"), etag  # 5 + 5 + 2 MiB: a multipart upload
    small = store.put_bytes("job-big", "small.bin", b"x" * 1000)
    etag = _raw(s3_endpoint).head_object(Bucket=s3_bucket, Key="multi/job-big/small.bin")["ETag"]
    assert "-" not in etag, etag
    assert store.read_bytes(small) == b"x" * 1000
    copy = tmp_path / "copy.bin"
    store.copy_to(uri, copy)
    assert copy.read_bytes() == data
    with pytest.raises(FileExistsError):
        store.copy_to(uri, copy)  # never over an existing file
    with pytest.raises(ArtifactError):
        store.copy_to("artifact://job-big/none.bin", tmp_path / "none.bin")


def test_ranges_and_presigned_links(store: S3ArtifactStore) -> None:
    video = store.put_bytes("job-v", "clip.mp4", bytes(range(256)) * 40)
    part = store.get(video, "bytes=10-19")
    assert b"".join(part.chunks()) == bytes(range(10, 20))
    assert part.content_range == "bytes 10-19/10240" and part.length == 10
    with pytest.raises(RangeNotSatisfiable) as err:
        store.get(video, "bytes=20000-")
    assert err.value.size == 10240
    page = store.put_bytes("job-v", "page.html", b"<script>alert(1)</script>")
    # What a browser does with a link: a plain GET, no credentials.
    r = httpx.get(store.presigned_url(video, ttl_s=60))
    assert r.status_code == 200 and r.content == bytes(range(256)) * 40
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["content-disposition"].startswith("inline")
    r = httpx.get(store.presigned_url(video, ttl_s=60), headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == bytes(range(10))
    r = httpx.get(store.presigned_url(page, ttl_s=60))
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")


def test_settings_pick_the_store(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    assert isinstance(store_for(Settings(data_dir=tmp_path)), LocalArtifactStore)
    local = store_for(Settings(artifacts=str(tmp_path / "elsewhere")))
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path / "elsewhere"
    s3 = _settings(s3_endpoint, s3_bucket, "p/q")
    assert store_for(s3) is store_for(s3)  # one client per configuration
    assert store_for(s3).object_key("artifact://j/a.txt") == "p/q/j/a.txt"  # type: ignore[attr-defined]
    for bad in ("s3://", "s3:///prefix", "http://example.com/bucket"):
        with pytest.raises(ValidationError):
            Settings(artifacts=bad)
    with pytest.raises(ValidationError):
        Settings(artifacts="s3://b/p", s3_multipart_chunk_mb=1)  # S3's parts are >= 5 MiB


def test_controller_routes_on_s3(s3_endpoint: str, s3_bucket: str) -> None:
    # `testserver`: the in-process client's Host (the controller answers only named hosts).
    settings = _settings(
        s3_endpoint, s3_bucket, "routes", api_token="tok", allowed_hosts=["testserver"]
    )
    auth = {"Authorization": "Bearer tok"}
    with TestClient(create_app(settings)) as client:
        body = os.urandom(3 * MiB)
        up = client.put("/uploads/clip.mp4", content=body, headers=auth)
        assert up.status_code == 201, up.text
        uri, url = up.json()["uri"], up.json()["url"]
        assert uri.startswith("artifact://uploads/") and uri.endswith("/clip.mp4")
        # The link is the store's presigned URL: a plain GET, no token.
        assert url.startswith(s3_endpoint) and "tok" not in url.split("?")[0]
        assert httpx.get(url).content == body
        path = uri.removeprefix("artifact://")
        whole = client.get(f"/artifacts/{path}", headers=auth)
        assert whole.status_code == 200 and whole.content == body
        assert whole.headers["x-content-type-options"] == "nosniff"
        assert whole.headers["content-security-policy"] == "sandbox"
        assert whole.headers["content-disposition"].startswith("inline")
        ranged = client.get(f"/artifacts/{path}", headers={**auth, "Range": "bytes=100-199"})
        assert ranged.status_code == 206 and ranged.content == body[100:200]
        assert ranged.headers["content-range"] == f"bytes 100-199/{len(body)}"
        tail = client.get(f"/artifacts/{path}", headers={**auth, "Range": "bytes=-5"})
        assert tail.status_code == 206 and tail.content == body[-5:]
        past = client.get(f"/artifacts/{path}", headers={**auth, "Range": f"bytes={len(body)}-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{len(body)}"
        assert client.get(f"/artifacts/{path}").status_code == 401
        assert client.get("/artifacts/uploads/nothing/here.txt", headers=auth).status_code == 404
        html = client.put("/uploads/page.html", content=b"<script>1</script>", headers=auth)
        served = client.get(
            "/artifacts/" + html.json()["uri"].removeprefix("artifact://"), headers=auth
        )
        assert served.headers["content-disposition"].startswith("attachment")
        # Names that cannot be stored: 400 with the reason, never a 500.
        for name, why in (
            ("a%00b.py", "control characters"),
            ("x" * 201, "longer than 200"),
            ("tab%09.py", "control characters"),
            ("back%5Cslash.py", "backslashes"),
            (".tmp-x", "reserved"),
        ):
            r = client.put(f"/uploads/{name}", content=b"x", headers=auth)
            assert r.status_code == 400 and why in r.json()["detail"], (name, r.text)
