"""How the shared controller and dashboard treat memos: a page, offload of a long text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shopfloor.registry import PutUpload
from tests.kinds.memo.settings import MemoSettings

if TYPE_CHECKING:
    from shopfloor.controller.dashboard.views import JobView
    from shopfloor.settings import Settings


def offload(data: dict[str, Any], put: PutUpload, limit: int) -> bool:
    text = data.get("text")
    if not isinstance(text, str) or len(text.encode()) <= limit // 4:
        return False
    data["text_uri"] = put("memo.txt", data.pop("text").encode())
    return True


def page_context(view: JobView, settings: Settings) -> dict[str, Any]:
    return {"banner": settings.of(MemoSettings).banner}
