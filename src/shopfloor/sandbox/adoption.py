"""What a worker keeps of a run whose activity attempt was lost, for a later attempt to adopt.

A Temporal server that is away longer than the heartbeat timeout times an attempt out, though
its run goes on fine on this worker: the next attempt of the same activity would start the
user's code a second time. Instead the run is kept here, keyed by the activity, for a window;
an attempt of the same activity that arrives on this worker within it takes the run over (its
process, or its finished result). Unadopted, the run is discarded when the window ends: the
retry went to another worker.

Generic over what is kept (`discard` frees it): nothing here knows about Temporal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger("shopfloor.sandbox")
T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    item: T
    attempt: int  # the attempt that owns it now
    expiry: asyncio.TimerHandle | None = None  # set while no attempt owns it


class Adoptions(Generic[T]):
    """Items by key, each owned by one attempt. `hold` it while an attempt uses it; `detach`
    it when that attempt is lost (kept `window_s`, then discarded); `claim` gives it to a
    later attempt; `release` when the owner is done with it (not discarded: the owner frees
    it). At most `max_detached` detached items are kept (the oldest is discarded first)."""

    def __init__(
        self,
        window_s: float,
        discard: Callable[[T], Coroutine[Any, Any, None]],  # run as a task of its own
        *,
        max_detached: int = 1000,
        what: str = "run",
    ) -> None:
        self.window_s = window_s
        self.what = what  # for the log line when one is discarded unadopted ("" → no line)
        self._discard = discard
        self.max_detached = max_detached
        self._entries: dict[Hashable, _Entry[T]] = {}
        self._discarding: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def hold(self, key: Hashable, attempt: int, item: T, *, detached: bool = False) -> None:
        """`item` is owned by `attempt` (and kept for the window at once, when `detached`)."""
        old = self._entries.pop(key, None)
        if old is not None and old.item is not item and old.expiry is not None:
            self._discard_entry(old)  # a detached one; an owned one is its owner's to free
        self._entries[key] = _Entry(item, attempt)
        if detached and not self.detach(key, attempt, item):
            self._entries.pop(key, None)

    def owns(self, key: Hashable, attempt: int, item: T) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.attempt == attempt and entry.item is item

    def claim(self, key: Hashable, attempt: int) -> T | None:
        """The item an earlier attempt of `key` holds or left, now owned by `attempt`."""
        entry = self._entries.get(key)
        if not self.enabled or entry is None or entry.attempt >= attempt:
            return None
        if entry.expiry is not None:
            entry.expiry.cancel()
            entry.expiry = None
        entry.attempt = attempt
        return entry.item

    def detach(self, key: Hashable, attempt: int, item: T) -> bool:
        """The owner lost its attempt: keep `item` for the window. False (and nothing kept)
        when adoption is off or `attempt` does not own it any more."""
        if not self.enabled or not self.owns(key, attempt, item):
            return False
        entry = self._entries[key]
        loop = asyncio.get_running_loop()
        entry.expiry = loop.call_later(self.window_s, self._expire, key, entry)
        detached = [k for k, e in self._entries.items() if e.expiry is not None]
        for oldest in detached[: max(0, len(detached) - self.max_detached)]:
            self._discard_entry(self._entries.pop(oldest))
        return True

    def release(self, key: Hashable, attempt: int, item: T) -> bool:
        """The owner is done with `item` (and frees it itself). False if it is not the owner."""
        if not self.owns(key, attempt, item):
            return False
        entry = self._entries.pop(key)
        if entry.expiry is not None:
            entry.expiry.cancel()
        return True

    def _expire(self, key: Hashable, entry: _Entry[T]) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
            if self.what:
                log.info(
                    "no later attempt of %s came in %gs: %s discarded",
                    key,
                    self.window_s,
                    self.what,
                )
            self._discard_entry(entry)

    def _discard_entry(self, entry: _Entry[T]) -> None:
        if entry.expiry is not None:
            entry.expiry.cancel()
        task = asyncio.get_running_loop().create_task(self._discard(entry.item))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    async def close(self) -> None:
        """Discards everything (the worker is stopping), and waits for the discards."""
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            self._discard_entry(entry)
        while self._discarding:
            done = await asyncio.gather(*self._discarding, return_exceptions=True)
            for result in done:
                if isinstance(result, BaseException):
                    log.warning("discarding a kept run failed: %r", result)
            self._discarding = {t for t in self._discarding if not t.done()}
