"""The artifact store (see `base`): the interface, its backends, and the one the settings name."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from shopfloor.artifacts.base import (
    MAX_NAME,
    MAX_PATH,
    SCHEME,
    ArtifactError,
    ArtifactStore,
    Collected,
    disposition,
    media_type_of,
    safe_relpath,
)
from shopfloor.artifacts.local import LocalArtifactStore

if TYPE_CHECKING:
    from shopfloor.settings import Settings

__all__ = [
    "MAX_NAME",
    "MAX_PATH",
    "SCHEME",
    "ArtifactError",
    "ArtifactStore",
    "Collected",
    "LocalArtifactStore",
    "disposition",
    "media_type_of",
    "safe_relpath",
    "store_for",
]

_stores: dict[tuple[object, ...], ArtifactStore] = {}
_lock = threading.Lock()


def store_for(settings: Settings) -> ArtifactStore:
    """The store the settings name: S3 for `SHOPFLOOR_ARTIFACTS=s3://…`, else the local
    directory. One per configuration, per process (an S3 client is costly to make)."""
    s3 = settings.s3_settings()
    key = ("s3", *s3.items()) if s3 else ("local", str(settings.artifact_root))
    with _lock:
        store = _stores.get(key)
        if store is None:
            if s3:
                from shopfloor.artifacts.s3 import S3ArtifactStore

                store = S3ArtifactStore(**s3)
            else:
                store = LocalArtifactStore(settings.artifact_root)
            _stores[key] = store
        return store
