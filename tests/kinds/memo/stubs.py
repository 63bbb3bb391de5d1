"""The memo kind's activity contract (see `shopfloor.contracts`): light, models only."""

from __future__ import annotations

from shopfloor.contracts import ActivityStub
from tests.kinds.memo.models import MemoInput

MEMO_CHARS = ActivityStub[MemoInput, int]("memo_chars", MemoInput, int)
