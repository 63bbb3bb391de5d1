"""An out-of-tree kind (tests/kinds/memo) gets a dashboard page, large-input offload and its own
settings with no edit outside its folder: loaded by SHOPFLOOR_KIND_MODULES, served by a real
worker and controller."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shopfloor.artifacts import store_for
from shopfloor.devserver import DevServer
from shopfloor.settings import Settings
from tests.helpers import REPO, Stack
from tests.kinds.memo.settings import MemoSettings

BANNER = "memos of the test floor"
MEMO = {
    "SHOPFLOOR_KIND_MODULES": '["tests.kinds.memo.kind"]',
    "PYTHONPATH": str(REPO),
    "SHOPFLOOR_MEMO_BANNER": BANNER,
    # The smallest inline limit: a 20 KB memo moves to the store.
    "SHOPFLOOR_INLINE_INPUT_MAX_KB": "16",
}


@pytest.fixture(scope="module")
def memo_stack(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        temporal_address=dev_server.address, tmp=tmp_path_factory.mktemp("memo"), extra_env=MEMO
    )
    s.start_worker("--kind", "memo")
    s.start_controller()
    yield s
    s.stop()


def test_its_settings_come_from_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPFLOOR_MEMO_BANNER", "from the environment")
    settings = Settings()
    assert settings.of(MemoSettings).banner == "from the environment"
    assert settings.of(MemoSettings) is settings.of(MemoSettings)  # read once
    given = settings.with_kind(MemoSettings(banner="given"))
    assert given.of(MemoSettings).banner == "given"
    assert not hasattr(settings, "banner")  # the shared settings know no kind's


def test_a_large_memo_travels_through_the_store_and_gets_its_page(memo_stack: Stack) -> None:
    text = "memo line\n" * 2000  # 20 KB: over the 16 KiB inline limit
    job_id = memo_stack.submit("memo", {"title": "long", "text": text})
    result = memo_stack.result(job_id)["result"]
    # The worker read the text back from the store: the input carried only its URI.
    assert result["chars"] == len(text)
    store = store_for(Settings(data_dir=memo_stack.tmp / "data"))
    assert store.read_bytes(result["text_uri"]) == text.encode()

    page = memo_stack.http.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert f'<p id="memo-banner">{BANNER}</p>' in html  # its settings, in its page context
    assert f'<strong id="memo-chars">{len(text)}</strong>' in html
    assert 'id="memo-offloaded"' in html


def test_a_short_memo_stays_inline(memo_stack: Stack) -> None:
    result = memo_stack.run("memo", {"title": "short", "text": "hello"})["result"]
    assert result == {"title": "short", "chars": 5, "text_uri": None}
