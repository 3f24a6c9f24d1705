"""`chipledger bench --scale`: its world is realistic custody that the ledger accepts whole,
and the command prints every measure for both sizes (the numbers are the bench's business)."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import Ledger
from tools.bench_custody import ScaleWorld
from tools.bench_scale import KINDS, build
from tools.cli import main

MODES = ("now", "as_of=<seq>", "as_of=<time>")
READ_ROWS = [f"{p} {kind} {mode}" for kind, _, pool in KINDS for p in ("p50", "p99")
             for mode in (MODES if pool else MODES[:1])]  # fmt: skip


def _table(output: str) -> dict[str, list[str]]:
    """The printed table's rows, by measure: [at the baseline, at N, ratio, target, result]."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("measure  "))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def _label(measure: str) -> str:
    """`p50 GET /v1/batches/{id} now` -> `p50 batch now`, as READ_ROWS names it."""
    paths = {"/v1/batches/{id}": "batch", "/v1/batches/{id}/history": "history",
             "/v1/serials/{serial}": "serial", "/v1/parties/{id}/allocation": "allocation",
             "/v1/flags?party={id}": "flags", "/v1/licenses/{id}": "license",
             "/v1/log/inclusion?seq={seq}": "inclusion"}  # fmt: skip
    p, _, path, mode = measure.split(" ")
    return f"{p} {paths[path]} {mode}"


def test_scale_bench_prints_every_measure_at_both_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--scale", "600", "--baseline", "300", "--reads", "3"])
    output = capsys.readouterr().out
    rows = _table(output)
    reads = sorted(_label(m) for m in rows if m.startswith(("p50 ", "p99 ")))
    assert reads == sorted(READ_ROWS)
    others = [m for m in rows if not m.startswith(("p50 ", "p99 "))]
    assert others == [
        "serve: spawn to first 200 of GET /v1/ledger", "server RSS after start",
        "server RSS after the reads", "server peak RSS (VmHWM)", "audit: wall time",
        "audit peak RSS, its largest process (wait4)",
        "audit peak PSS, all its processes (sampled)",
    ]  # fmt: skip
    for cells in rows.values():
        small, large = (float(cell.split()[0].replace(",", "")) for cell in cells[:2])
        assert small > 0
        assert large > 0
        assert float(cells[2]) > 0
    assert "  at 300: 300 entries, " in output
    assert "  at 600: 600 entries, " in output
    assert re.search(r"^measure +at 300 +at 600 +ratio +target +result$", output, re.M)
    assert code == (1 if "FAIL" in output else 0)


def _all(client: TestClient, path: str, key: str, **params: Any) -> list[Any]:
    """Every item of a list answer, following `next` where the answer has one."""
    found: list[Any] = []
    while True:
        body = client.get(path, params=params).json()
        found += body[key]
        if not body.get("next"):
            return found
        params["after"] = body["next"]


def test_the_world_is_custody_with_transfers_splits_short_deliveries_and_flags(
    tmp_path: Path,
) -> None:
    built = build(str(tmp_path / "world.db"), 2_000, lambda _: None)
    ledger = Ledger(built.store)
    client = TestClient(create_app(ledger, open_reads=True))
    assert client.get("/v1/ledger").json()["size"] == 2_000
    types = Counter[str]()
    for start in range(0, 2_000, 1_000):
        for entry in client.get("/v1/log/entries", params={"start": start, "limit": 1000}).json()[
            "entries"
        ]:
            types[json.loads(base64.b64decode(entry["envelope"]["payload"]))["type"]] += 1
    for kind in ["batch.transferred", "batch.split", "batch.relocated", "batch.installed",
                 "batch.decommissioned", "batch.reported_lost", "license.granted",
                 "security.attested", "site.inspected"]:  # fmt: skip
        assert types[kind] > 0, kind
    rules = Counter(flag["rule"] for flag in _all(client, "/v1/flags", "flags"))
    for rule in ["transfer-not-authorized", "delivery-shortfall", "serial-mismatch",
                 "embargoed-destination", "license-required", "listed-party", "site-threshold",
                 "location-mismatch", "late-report"]:  # fmt: skip
        assert rules[rule] > 0, rule
    assert rules["late-report"] < types["batch.fabricated"] // 20  # most events are on time
    batches = [client.get(f"/v1/batches/{b.name}").json() for b in built.catalog.batches.items]
    assert any(b["missing"] > 0 for b in batches)  # short deliveries
    assert any(b.get("parent") for b in batches)  # split children
    assert built.customers == 5
    ledger.close()


def test_the_world_is_the_same_bytes_every_time() -> None:
    first = [e for _, chunk in ScaleWorld(450, "o.example/x").chunks() for e in chunk]
    again = [e for _, chunk in ScaleWorld(450, "o.example/x").chunks() for e in chunk]
    assert len(first) == 450
    assert first == again


def test_a_postgresql_bench_store_is_analyzed_as_autovacuum_would(pg_store: str) -> None:
    import psycopg

    built = build(pg_store, 300, lambda line: None)
    assert built.entries == 300
    schema = pg_store.rpartition("schema=")[2]
    with psycopg.connect(pg_store.partition("?")[0]) as conn:
        rows = conn.execute(
            "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
            "WHERE schemaname = %s",
            (schema,),
        ).fetchall()
    analyzed: dict[str, bool] = {name: done for name, done in rows}
    assert analyzed["ledger_events"] is True  # the planner has statistics at the end
    assert all(analyzed.values()), analyzed
