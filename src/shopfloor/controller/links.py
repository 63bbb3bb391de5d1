"""Links: every `artifact://` URI in a result becomes a URL the controller serves it at.

With an API token set, artifact links are signed (HMAC of the path and an expiry, `exp` and
`sig` query parameters): a browser can open them (a video in a page, a link printed by the
CLI) without the long-lived token in the URL, and they stop working when they expire.

With an S3 store (`SHOPFLOOR_ARTIFACTS=s3://…`) the links are the store's own presigned GET
URLs instead, token or not: browsers fetch the bytes from S3, not through the controller, and
the links expire after the same `link_ttl_s`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote

from shopfloor.artifacts import SCHEME, store_for
from shopfloor.settings import Settings


def _link_key(settings: Settings) -> bytes | None:
    if settings.link_secret is not None:
        return settings.link_secret.get_secret_value().encode()
    if settings.api_token is None:
        return None
    token = settings.api_token.get_secret_value().encode()
    return hmac.new(token, b"shopfloor artifact links", hashlib.sha256).digest()


def link_signature(settings: Settings, path: str, expires: int) -> str | None:
    """The signature of `path` (as in /artifacts/<path>) until `expires` (unix seconds)."""
    key = _link_key(settings)
    if key is None:
        return None
    return hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()[:40]


def signature_valid(settings: Settings, path: str, expires: str, sig: str) -> bool:
    try:
        when = int(expires)
    except ValueError:
        return False
    expected = link_signature(settings, path, when)
    return expected is not None and when >= time.time() and hmac.compare_digest(expected, sig)


def artifact_url(base: str | Settings, uri: str, *, ttl_s: int | None = None) -> str:
    """The URL of an artifact. Given the settings: the S3 store's presigned URL, or the
    controller's, signed when an API token is set."""
    path = uri[len(SCHEME) :]
    if isinstance(base, str):
        return f"{base}/artifacts/{quote(path)}"
    ttl = ttl_s or base.link_ttl_s
    if base.s3_settings() is not None:
        try:
            presigned = store_for(base).presigned_url(uri, ttl_s=ttl)
        except ValueError:  # not a well-formed URI: the controller answers 404 for it
            presigned = None
        if presigned:
            return presigned
    url = f"{base.public_controller_url}/artifacts/{quote(path)}"
    expires = int(time.time()) + ttl
    sig = link_signature(base, path, expires)
    return url if sig is None else f"{url}?exp={expires}&sig={sig}"


def links_in(value: Any, base: str | Settings) -> dict[str, str]:
    """artifact:// URI → HTTP URL, for every URI anywhere in `value` (nested dicts, lists).
    Given the settings (not only the base URL), the URLs are signed links."""
    found: dict[str, str] = {}

    def walk(v: Any) -> None:
        if isinstance(v, str) and v.startswith(SCHEME):
            found[v] = artifact_url(base, v)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return found


def job_links(base_url: str, job_id: str) -> dict[str, str]:
    return {
        "status_url": f"{base_url}/jobs/{job_id}",
        "result_url": f"{base_url}/jobs/{job_id}/result",
    }
