"""Regression tests from a review of the lean write path: the worker never changes an outcome."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ledger.ahead as ahead_module
from ledger.ahead import Worker
from ledger.application import Ledger
from ledger.errors import BatchRefused, InvalidEvent
from tests.support import World

Json = dict[str, Any]


def fabricate(world: World, batch: str) -> Json:
    event = world.event(
        "batch.fabricated", "nvidia", batch=batch, model="H200", quantity=8, country="TW"
    )
    return world.envelope(event, "nvidia")


def _ready(worker: Worker) -> Worker:
    assert worker.start()
    deadline = time.monotonic() + 30
    while not worker.ready and time.monotonic() < deadline:
        worker.pump(0.5)
    assert worker.ready
    return worker


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """A ready worker of this test's own, used by every batch big enough."""
    started = _ready(Worker())
    monkeypatch.setattr(ahead_module, "_WORKER", started)
    monkeypatch.setattr(ahead_module, "usable_cores", lambda: 2)
    yield started
    started.fail()


def _refused(ledger: Ledger, body: bytes) -> tuple[int, str]:
    with pytest.raises(BatchRefused) as refused:
        ledger.submit_batch(body)
    return refused.value.index, refused.value.code


def test_a_deeply_nested_extra_field_is_422_at_its_index_with_the_worker_too(
    worker: Worker, populated: Ledger, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    envelopes = [json.dumps(fabricate(world, f"d{i}")) for i in range(16)]
    depth = 600  # well within what the body parser accepts (about 980 here)
    envelopes[9] = envelopes[9][:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    body = ('{"envelopes": [' + ",".join(envelopes) + "]}").encode()

    monkeypatch.setattr(ahead_module, "usable_cores", lambda: 1)
    here = _refused(populated, body)
    monkeypatch.setattr(ahead_module, "usable_cores", lambda: 2)
    assert here == (9, InvalidEvent.code)

    assert _refused(populated, body) == here  # RecursionError while pickling, today


def test_the_worker_runs_the_ledgers_own_code_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "ledger").mkdir()
    (tmp_path / "ledger" / "__init__.py").write_text("")
    (tmp_path / "ledger" / "ahead.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('the cwd copy ran')\n"
    )
    monkeypatch.chdir(tmp_path)
    assert str(tmp_path) not in sys.path  # this process: unaffected
    assert "" not in sys.path[:1]
    worker = Worker()
    try:
        assert worker.start()
        deadline = time.monotonic() + 30
        while not worker.ready and not worker._failed and time.monotonic() < deadline:
            worker.pump(0.25)
        ready = worker.ready
    finally:
        with contextlib.suppress(Exception):
            worker.fail()

    assert not marker.exists()
    assert ready
