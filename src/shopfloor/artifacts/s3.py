"""The S3 store (`SHOPFLOOR_ARTIFACTS=s3://bucket/prefix`): AWS S3 or any S3-compatible service
(MinIO, Ceph, R2… through `SHOPFLOOR_S3_ENDPOINT_URL`), shared by workers on many machines.

An artifact `artifact://<job>/<path>` is the object `<prefix>/<job>/<path>`. Large files go up
in parts (boto3's managed transfer: multipart above the threshold, parts in parallel); an
object appears only when its upload completes, so a crash never leaves half an artifact.
Browsers get presigned GET URLs, whose response headers (type, disposition) the store sets.

Every call blocks (boto3): callers on an event loop run them in a thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shopfloor.artifacts.base import (
    ArtifactError,
    ArtifactStore,
    Readable,
    disposition,
    media_type_of,
    verify_upload_file,
)

MiB = 1024 * 1024
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class RangeNotSatisfiable(ArtifactError):
    """A Range request that starts past the object's end (HTTP 416)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable (object is {size} bytes)")
        self.size = size


@dataclass
class S3Object:
    """One GetObject answer, for streaming: its body and what the HTTP response says."""

    body: Any  # botocore StreamingBody
    length: int
    content_range: str | None  # set when a Range was asked for and honoured

    def chunks(self, size: int = 256 * 1024) -> Iterator[bytes]:
        try:
            yield from self.body.iter_chunks(size)
        finally:
            self.body.close()


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix")."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3:// URL without a bucket: {url!r}")
    return bucket, prefix.strip("/")


class S3ArtifactStore(ArtifactStore):
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        multipart_threshold: int = 8 * MiB,
        multipart_chunksize: int = 8 * MiB,
        max_concurrency: int = 4,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = url
        # Credentials: given here (from settings), else boto3's own chain (AWS_* variables,
        # shared config, an instance role). Never from job input.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region or "us-east-1",
        )
        config = Config(
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": 5},
            # S3-compatible services are reached by path (http://host:9000/bucket/key).
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            max_pool_connections=max(10, max_concurrency * 2),
        )
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        # Presigned URLs name the host browsers reach, which may differ from the workers'
        # (e.g. http://minio:9000 inside compose, https://files.example.com outside).
        public = public_endpoint_url or endpoint_url
        self.presign_client = (
            self.client
            if public == endpoint_url
            else session.client("s3", endpoint_url=public, config=config)
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
        )

    def describe(self) -> str:
        where = self.client.meta.endpoint_url
        return f"{self.url} at {where}"

    def object_key(self, uri: str) -> str:
        key = self.key(uri)
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- writing -----------------------------------------------------------------------------
    def _put_stream(self, uri: str, source: Readable) -> None:
        key = self.object_key(uri)
        extra = {"ContentType": media_type_of(key.rsplit("/", 1)[-1])}
        try:
            self.client.upload_fileobj(
                source, self.bucket, key, ExtraArgs=extra, Config=self.transfer
            )
        except (ClientError, BotoCoreError) as err:
            raise OSError(f"storing {uri} in {self.url} failed: {err}") from err

    def _delete(self, uri: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(uri))
        except (ClientError, BotoCoreError) as err:
            raise OSError(f"removing {uri} from {self.url} failed: {err}") from err

    # -- reading -----------------------------------------------------------------------------
    def get(self, uri: str, byte_range: str | None = None) -> S3Object:
        """The object's body as a stream; `byte_range` (`bytes=a-b`) is passed to S3.
        Raises ArtifactError when there is no such object, RangeNotSatisfiable (416)."""
        key = self.object_key(uri)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range:
            args["Range"] = byte_range
        try:
            answer = self.client.get_object(**args)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code == "InvalidRange":
                raise RangeNotSatisfiable(self._size(key)) from err
            if code in _MISSING:
                raise ArtifactError(f"no such artifact: {uri}") from err
            raise OSError(f"reading {uri} from {self.url} failed: {err}") from err
        except BotoCoreError as err:
            raise OSError(f"reading {uri} from {self.url} failed: {err}") from err
        return S3Object(
            body=answer["Body"],
            length=int(answer["ContentLength"]),
            content_range=answer.get("ContentRange") if byte_range else None,
        )

    def _size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except (ClientError, BotoCoreError):
            return 0

    def _open(self, uri: str) -> BinaryIO:
        body: BinaryIO = self.get(uri).body  # botocore's StreamingBody: a file-like reader
        return body

    def copy_to(self, uri: str, dest: Path) -> None:
        with open(dest, "xb") as out:
            try:
                self.client.download_fileobj(
                    self.bucket, self.object_key(uri), out, Config=self.transfer
                )
            except ClientError as err:
                code = str(err.response.get("Error", {}).get("Code", ""))
                if code in _MISSING:
                    raise ArtifactError(f"no such artifact: {uri}") from err
                raise OSError(f"reading {uri} from {self.url} failed: {err}") from err
        verify_upload_file(uri, Path(dest))

    # -- links -------------------------------------------------------------------------------
    def presigned_url(self, uri: str, *, ttl_s: int) -> str:
        """A presigned GET, valid `ttl_s` seconds, whose answer is typed and disposed as the
        controller would serve it (what a browser could run comes as a download)."""
        key = self.object_key(uri)
        name = key.rsplit("/", 1)[-1]
        media_type = media_type_of(name)
        params = {
            "Bucket": self.bucket,
            "Key": key,
            "ResponseContentType": media_type,
            "ResponseContentDisposition": (
                f"{disposition(media_type)}; filename*=UTF-8''{quote(name, safe='')}"
            ),
            "ResponseCacheControl": "private, max-age=60",
        }
        url: str = self.presign_client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=ttl_s
        )
        return url
