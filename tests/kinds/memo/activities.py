"""The memo kind's worker side: reads an offloaded text back from the artifact store."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from temporalio import activity

from shopfloor.registry import ActivitiesIterator, WorkerContext
from tests.kinds.memo.models import MemoInput
from tests.kinds.memo.stubs import MEMO_CHARS


@asynccontextmanager
async def worker(ctx: WorkerContext) -> ActivitiesIterator:
    @activity.defn(name=MEMO_CHARS.name)
    async def memo_chars(memo: MemoInput) -> int:
        if memo.text is not None:
            return len(memo.text)
        assert memo.text_uri is not None
        data = await asyncio.to_thread(ctx.artifacts.read_bytes, memo.text_uri)
        return len(data.decode())

    yield [memo_chars]
