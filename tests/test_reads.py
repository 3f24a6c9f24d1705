"""The state reads of PROTOCOL.md section 6 (batch, history, serial, allocation) and `as_of`.

What each read shows and leaves out, what an allocation counts, and how `as_of` a seq or a
time answers with the state of that moment after the ledger moved on. Last, the read models
behind them: rebuilt from the stored events, or opened afresh on the same store, they give
exactly the live answers (STYLE.md habit 7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import Ledger
from ledger.errors import NotFound
from tests.support import (
    Clock,
    World,
    assert_rebuild_equals_live,
    new_ledger,
    populate,
    read_model_rows,
)
from tests.test_story import Desk, Json, Sent, allocation, refused


@pytest.fixture
def desk(client: TestClient, world: World) -> Desk:
    return Desk(client, world)


@dataclass
class Bench:
    """A populated ledger of its own, shared by the read-only tests of one module."""

    ledger: Ledger
    store: str
    clock: Clock
    desk: Desk
    sent: list[Sent] = field(default_factory=list)


def bench(directory: Path) -> Bench:
    clock = Clock()
    world, store = World(clock), str(directory / "ledger.db")
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    client = TestClient(create_app(ledger, open_reads=True), raise_server_exceptions=False)
    return Bench(ledger, store, clock, Desk(client, world))


def fabricate(desk: Desk, batch: str, quantity: int, model: str = "H100", **fields: Any) -> Sent:
    return desk.record("batch.fabricated", "nvidia", batch=batch, model=model,
                       quantity=quantity, country="TW", **fields)  # fmt: skip


def ship(
    desk: Desk, batch: str, quantity: int, to: str = "gulf-cloud", destination: str = "AE",
    **fields: Any,
) -> Sent:  # fmt: skip
    """Fabricated by nvidia in TW and exported to `to`."""
    fabricate(desk, batch, quantity, **fields)
    return desk.record("batch.exported", "nvidia", batch=batch, to=to, destination=destination)


def arrive(
    desk: Desk, batch: str, quantity: int, site: str = "dxb-1", destination: str = "AE",
    **fields: Any,
) -> Sent:  # fmt: skip
    """Fabricated, exported to gulf-cloud and delivered, all of it, at its site `site`."""
    ship(desk, batch, quantity, destination=destination, **fields)
    return desk.record("batch.delivered", "gulf-cloud", batch=batch, site=site, quantity=quantity)


def view(batch: str, sent: Sent, **state: Any) -> Json:
    """The whole expected view of `batch`, whose latest entry is `sent`."""
    return {"batch": batch, "missing": 0, "serials_known": False, **state,
            "head": sent.receipt["envelope_hash"], "last_seq": sent.seq}  # fmt: skip


def counted(body: Json) -> Json:
    """An allocation with its batch ids in a fixed order (the protocol names none)."""
    return {**body, "batches": sorted(body["batches"])}


# -- GET /v1/batches/{id} ----------------------------------------------------------------------


def test_a_fabricated_batch_shows_title_and_possession_with_its_vendor_and_no_place(
    desk: Desk,
) -> None:
    sent = fabricate(desk, "b-1", 16)

    assert desk.read("/v1/batches/b-1") == view(
        "b-1", sent, model="H100", quantity=16, status="fabricated", owner="nvidia",
        holder="nvidia",
    )  # fmt: skip


def test_a_batch_in_transit_names_its_consignee_and_no_site(desk: Desk) -> None:
    sent = ship(desk, "b-1", 16)

    assert desk.read("/v1/batches/b-1") == view(
        "b-1", sent, model="H100", quantity=16, status="in_transit", owner="nvidia",
        holder="nvidia", to="gulf-cloud",
    )  # fmt: skip


def test_a_delivered_batch_is_at_its_site_and_country_and_names_no_consignee(
    desk: Desk,
) -> None:
    sent = arrive(desk, "b-1", 16)

    assert desk.read("/v1/batches/b-1") == view(
        "b-1", sent, model="H100", quantity=16, status="delivered", owner="gulf-cloud",
        holder="gulf-cloud", country="AE", site="dxb-1",
    )  # fmt: skip


def test_an_installed_batch_stays_at_its_site(desk: Desk) -> None:
    arrive(desk, "b-1", 16)
    sent = desk.record("batch.installed", "gulf-cloud", batch="b-1", site="dxb-1")

    assert desk.read("/v1/batches/b-1") == view(
        "b-1", sent, model="H100", quantity=16, status="installed", owner="gulf-cloud",
        holder="gulf-cloud", country="AE", site="dxb-1",
    )  # fmt: skip


def test_a_relocated_batch_is_at_its_new_site_and_in_its_country(desk: Desk, world: World) -> None:
    desk.accept(world.site("ruh-1", "gulf-cloud", "SA"))
    arrive(desk, "b-1", 16)
    desk.record("batch.installed", "gulf-cloud", batch="b-1", site="dxb-1")
    sent = desk.record("batch.relocated", "gulf-cloud", batch="b-1", site="ruh-1")

    assert desk.read("/v1/batches/b-1") == view(
        "b-1", sent, model="H100", quantity=16, status="delivered", owner="gulf-cloud",
        holder="gulf-cloud", country="SA", site="ruh-1",
    )  # fmt: skip


def test_a_transfer_in_place_changes_the_owner_and_leaves_holder_site_and_status(
    desk: Desk,
) -> None:
    arrive(desk, "b-1", 16)
    desk.record("batch.installed", "gulf-cloud", batch="b-1", site="dxb-1")
    sent = desk.record("batch.transferred", "gulf-cloud", "desert-ai", batch="b-1",
                       to="desert-ai")  # fmt: skip

    assert desk.read("/v1/batches/b-1") == view(
        "b-1", sent, model="H100", quantity=16, status="installed", owner="desert-ai",
        holder="gulf-cloud", country="AE", site="dxb-1",
    )  # fmt: skip


def test_a_transfer_to_a_site_moves_title_and_possession_there(desk: Desk, world: World) -> None:
    desk.accept(world.site("auh-1", "desert-ai", "AE"))
    arrive(desk, "b-1", 16)
    desk.record("batch.installed", "gulf-cloud", batch="b-1", site="dxb-1")
    sent = desk.record("batch.transferred", "gulf-cloud", "desert-ai", batch="b-1",
                       to="desert-ai", site="auh-1")  # fmt: skip

    assert desk.read("/v1/batches/b-1") == view(
        "b-1", sent, model="H100", quantity=16, status="delivered", owner="desert-ai",
        holder="desert-ai", country="AE", site="auh-1",
    )  # fmt: skip


def test_a_split_child_names_its_parent_and_the_parent_its_children(desk: Desk) -> None:
    arrive(desk, "b-1", 16)
    split = desk.record("batch.split", "gulf-cloud", batch="b-1", into=[
        {"batch": "b-1a", "quantity": 10}, {"batch": "b-1b", "quantity": 6},
    ])  # fmt: skip

    parent = desk.read("/v1/batches/b-1")
    assert parent["status"] == "split"
    assert parent["children"] == ["b-1a", "b-1b"]
    assert "parent" not in parent
    assert (parent["quantity"], parent["head"], parent["last_seq"]) == (
        16, split.receipt["envelope_hash"], split.seq,
    )  # fmt: skip
    assert desk.read("/v1/batches/b-1a") == view(
        "b-1a", split, model="H100", quantity=10, status="delivered", owner="gulf-cloud",
        holder="gulf-cloud", country="AE", site="dxb-1", parent="b-1",
    )  # fmt: skip


def test_a_short_delivery_counts_the_missing_chips_and_without_serials_forgets_them(
    desk: Desk,
) -> None:
    ship(desk, "b-1", 4, serials=["s-1", "s-2", "s-3", "s-4"])
    assert desk.read("/v1/batches/b-1")["serials_known"] is True

    sent = desk.record("batch.delivered", "gulf-cloud", batch="b-1", site="dxb-1", quantity=3)

    assert desk.read("/v1/batches/b-1") == view(
        "b-1", sent, model="H100", quantity=3, missing=1, status="delivered",
        owner="gulf-cloud", holder="gulf-cloud", country="AE", site="dxb-1",
    )  # fmt: skip


def test_a_full_delivery_that_names_no_serials_keeps_the_shipped_ones(desk: Desk) -> None:
    ship(desk, "b-1", 2, serials=["s-1", "s-2"])
    desk.record("batch.delivered", "gulf-cloud", batch="b-1", site="dxb-1", quantity=2)

    assert desk.read("/v1/batches/b-1")["serials_known"] is True
    assert desk.read("/v1/serials/s-2") == {"serial": "s-2", "batch": "b-1"}


@pytest.mark.parametrize(
    "path",
    ["/v1/batches/nowhere", "/v1/batches/nowhere/history", "/v1/serials/no-such-serial",
     "/v1/parties/nobody/allocation"],
    ids=["batch", "history", "serial", "allocation"],
)  # fmt: skip
def test_reading_something_never_recorded_is_404(desk: Desk, path: str) -> None:
    fabricate(desk, "b-1", 1, serials=["s-1"])

    refused(desk.client.get(path), 404, "not_found")


# -- GET /v1/batches/{id}/history --------------------------------------------------------------


def test_history_lists_a_batchs_entries_in_order_exactly_as_accepted(
    desk: Desk, clock: Clock
) -> None:
    story = [fabricate(desk, "b-1", 8)]
    fabricate(desk, "other", 8)  # another batch's entries are not this one's history
    clock.advance(hours=5)
    story.append(desk.record("batch.exported", "nvidia", batch="b-1", to="gulf-cloud",
                             destination="AE"))  # fmt: skip
    clock.advance(days=3)
    story.append(desk.record("batch.delivered", "gulf-cloud", batch="b-1", site="dxb-1",
                             quantity=8))  # fmt: skip

    assert desk.read("/v1/batches/b-1/history") == {
        "batch": "b-1",
        "entries": [sent.entry() for sent in story],
    }


def test_history_of_a_split_child_includes_its_ancestors_entries_but_not_its_siblings(
    desk: Desk,
) -> None:
    lineage = [fabricate(desk, "b-1", 8)]
    lineage.append(desk.record("batch.split", "nvidia", batch="b-1", into=[
        {"batch": "b-1a", "quantity": 4}, {"batch": "b-1b", "quantity": 4},
    ]))  # fmt: skip
    desk.record("batch.decommissioned", "nvidia", batch="b-1b", reason="failed burn-in")
    lineage.append(desk.record("batch.split", "nvidia", batch="b-1a", into=[
        {"batch": "b-1a1", "quantity": 1}, {"batch": "b-1a2", "quantity": 3},
    ]))  # fmt: skip
    own = desk.record("batch.exported", "nvidia", batch="b-1a2", to="gulf-cloud",
                      destination="AE")  # fmt: skip

    grandchild = desk.read("/v1/batches/b-1a2/history")
    assert grandchild == {"batch": "b-1a2", "entries": [s.entry() for s in [*lineage, own]]}
    parent = desk.read("/v1/batches/b-1/history")["entries"]
    assert [entry["seq"] for entry in parent] == [lineage[0].seq, lineage[1].seq]


# -- GET /v1/serials/{serial} ------------------------------------------------------------------


def test_a_serial_is_held_by_the_split_child_that_got_it_never_by_the_split_parent(
    desk: Desk,
) -> None:
    fabricate(desk, "b-1", 4, serials=["s-1", "s-2", "s-3", "s-4"])
    before = desk.size() - 1
    desk.record("batch.split", "nvidia", batch="b-1", into=[
        {"batch": "b-1a", "quantity": 1, "serials": ["s-3"]},
        {"batch": "b-1b", "quantity": 3, "serials": ["s-1", "s-2", "s-4"]},
    ])  # fmt: skip
    desk.record("batch.split", "nvidia", batch="b-1b", into=[
        {"batch": "b-1b1", "quantity": 2, "serials": ["s-4", "s-1"]},
        {"batch": "b-1b2", "quantity": 1, "serials": ["s-2"]},
    ])  # fmt: skip

    holders = {s: desk.read(f"/v1/serials/{s}")["batch"] for s in ["s-1", "s-2", "s-3", "s-4"]}
    assert holders == {"s-1": "b-1b1", "s-2": "b-1b2", "s-3": "b-1a", "s-4": "b-1b1"}
    assert desk.read("/v1/serials/s-2", as_of=before) == {"serial": "s-2", "batch": "b-1"}


def test_a_decommissioned_or_lost_batch_still_answers_for_its_serials(desk: Desk) -> None:
    fabricate(desk, "b-1", 1, serials=["s-1"])
    fabricate(desk, "b-2", 1, serials=["s-2"])
    desk.record("batch.decommissioned", "nvidia", batch="b-1", reason="failed burn-in")
    desk.record("batch.reported_lost", "nvidia", batch="b-2", reason="stolen from the fab")

    assert desk.read("/v1/serials/s-1")["batch"] == "b-1"
    assert desk.read("/v1/serials/s-2")["batch"] == "b-2"


# -- GET /v1/parties/{id}/allocation -----------------------------------------------------------


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """Batches in every state that an allocation counts, or leaves out, for two buyers."""
    told = bench(tmp_path_factory.mktemp("scene"))
    desk, world = told.desk, told.desk.world
    desk.accept(world.site("ruh-1", "gulf-cloud", "SA"))
    desk.accept(world.site("auh-1", "desert-ai", "AE"))
    fabricate(desk, "f-1", 10, model="H20")  # fabricated: nobody's
    ship(desk, "t-1", 100)  # in transit to gulf-cloud, owned by nvidia
    arrive(desk, "d-1", 200, model="H200", serials=[f"D-{n:03d}" for n in range(200)])
    arrive(desk, "i-1", 300, site="ruh-1", destination="SA")
    desk.record("batch.installed", "gulf-cloud", batch="i-1", site="ruh-1")
    arrive(desk, "x-1", 40)
    desk.record("batch.decommissioned", "gulf-cloud", batch="x-1", reason="end of life")
    ship(desk, "l-1", 50)
    desk.record("batch.reported_lost", "nvidia", batch="l-1", reason="lost at sea")
    arrive(desk, "s-1", 100, model="H200", serials=[f"S-{n:03d}" for n in range(100)])
    desk.record("batch.split", "gulf-cloud", batch="s-1", into=[
        {"batch": "s-1a", "quantity": 60, "serials": [f"S-{n:03d}" for n in range(60)]},
        {"batch": "s-1b", "quantity": 40, "serials": [f"S-{n:03d}" for n in range(60, 100)]},
    ])  # fmt: skip
    desk.record("batch.relocated", "gulf-cloud", batch="s-1b", site="ruh-1")
    ship(desk, "q-1", 30, serials=[f"Q-{n:03d}" for n in range(30)])  # 25 of 30 arrive
    desk.record("batch.delivered", "gulf-cloud", batch="q-1", site="dxb-1", quantity=25,
                serials=[f"Q-{n:03d}" for n in range(25)])  # fmt: skip
    arrive(desk, "p-1", 70, model="B200")
    desk.record("batch.transferred", "gulf-cloud", "desert-ai", batch="p-1", to="desert-ai")
    arrive(desk, "r-1", 80, model="B200")
    desk.record("batch.exported", "gulf-cloud", batch="r-1", to="desert-ai", destination="SA")
    arrive(desk, "m-1", 90, model="B200")
    desk.record("batch.transferred", "gulf-cloud", "desert-ai", batch="m-1", to="desert-ai",
                site="auh-1")  # fmt: skip
    return told


def test_allocation_counts_chips_in_transit_to_a_party_and_chips_it_owns_at_its_sites(
    scene: Bench,
) -> None:
    gulf = scene.desk.read("/v1/parties/gulf-cloud/allocation")
    desert = scene.desk.read("/v1/parties/desert-ai/allocation")

    assert counted(gulf) == allocation(
        "gulf-cloud",
        by_status={"in_transit": 100, "delivered": 325, "installed": 300},
        by_country={"AE": 385, "SA": 340},
        by_site={"dxb-1": 285, "ruh-1": 340},
        by_model={"H100": 425, "H200": 300},
        batches=["d-1", "i-1", "q-1", "s-1a", "s-1b", "t-1"],
    )
    assert counted(desert) == allocation(
        "desert-ai",
        by_status={"delivered": 160, "in_transit": 80},
        by_country={"AE": 160, "SA": 80},  # r-1 is counted under its destination
        by_site={"dxb-1": 70, "auh-1": 90},
        by_model={"B200": 240},
        batches=["m-1", "p-1", "r-1"],
    )


def test_a_party_that_holds_nothing_has_an_empty_allocation(scene: Bench) -> None:
    for party in ["nvidia", "fastfreight"]:
        assert scene.desk.read(f"/v1/parties/{party}/allocation") == allocation(
            party, by_status={}, by_country={}, by_site={}, by_model={}, batches=[]
        )


def _decommissioned(desk: Desk) -> None:
    arrive(desk, "b", 10)
    desk.record("batch.decommissioned", "gulf-cloud", batch="b", reason="end of life")


def _lost(desk: Desk) -> None:
    arrive(desk, "b", 10)
    desk.record("batch.installed", "gulf-cloud", batch="b", site="dxb-1")
    desk.record("batch.reported_lost", "gulf-cloud", batch="b", reason="fire")


def _lost_in_transit(desk: Desk) -> None:
    ship(desk, "b", 10)
    desk.record("batch.reported_lost", "nvidia", batch="b", reason="lost at sea")


def _transferred_away_in_place(desk: Desk) -> None:
    arrive(desk, "b", 10)
    desk.record("batch.transferred", "gulf-cloud", "desert-ai", batch="b", to="desert-ai")


def _re_exported(desk: Desk) -> None:
    arrive(desk, "b", 10)
    desk.record("batch.exported", "gulf-cloud", batch="b", to="desert-ai", destination="AE")


def _split(desk: Desk) -> None:
    arrive(desk, "b", 10)
    desk.record("batch.split", "gulf-cloud", batch="b", into=[
        {"batch": "b-1", "quantity": 7}, {"batch": "b-2", "quantity": 3},
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "party", "total", "batches"),
    [
        (lambda desk: fabricate(desk, "b", 10), "nvidia", 0, []),
        (lambda desk: ship(desk, "b", 10), "nvidia", 0, []),
        (_decommissioned, "gulf-cloud", 0, []),
        (_lost, "gulf-cloud", 0, []),
        (_lost_in_transit, "gulf-cloud", 0, []),
        (_transferred_away_in_place, "gulf-cloud", 0, []),
        (_re_exported, "gulf-cloud", 0, []),
        (_split, "gulf-cloud", 10, ["b-1", "b-2"]),
    ],
    ids=[
        "fabricated, for its vendor",
        "in transit, for its owner the exporter",
        "decommissioned",
        "reported lost",
        "lost in transit, for its consignee",
        "transferred away in place, for the old owner who still holds it",
        "re-exported, for its owner until delivery",
        "a split parent (its children count)",
    ],
)
def test_allocation_leaves_out(
    desk: Desk, setup: Callable[[Desk], object], party: str, total: int, batches: list[str]
) -> None:
    setup(desk)

    body = desk.read(f"/v1/parties/{party}/allocation")

    assert (body["total"], sorted(body["batches"])) == (total, batches)
    assert "b" not in body["batches"]


# -- as_of -------------------------------------------------------------------------------------

STATE_READS = {
    "batch": "/v1/batches/h100-9",
    "history": "/v1/batches/h100-9/history",
    "serial": "/v1/serials/J-0",
    "allocation": "/v1/parties/gulf-cloud/allocation",
}


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """One batch's day, its seqs 8 to 12. Fabricated at 12:00; exported at 13:00 but recorded
    at 14:00; delivered at 16:00; installed at 18:00; split at 20:00."""
    told = bench(tmp_path_factory.mktemp("journey"))
    desk, clock, story = told.desk, told.clock, told.sent
    serials = [f"J-{n}" for n in range(8)]
    story.append(fabricate(desk, "h100-9", 8, serials=serials))
    clock.advance(hours=2)
    story.append(desk.record("batch.exported", "nvidia", batch="h100-9", to="gulf-cloud",
                             destination="AE", at="2026-03-06T13:00:00Z"))  # fmt: skip
    clock.advance(hours=2)
    story.append(desk.record("batch.delivered", "gulf-cloud", batch="h100-9", site="dxb-1",
                             quantity=8))  # fmt: skip
    clock.advance(hours=2)
    story.append(desk.record("batch.installed", "gulf-cloud", batch="h100-9", site="dxb-1"))
    clock.advance(hours=2)
    story.append(desk.record("batch.split", "gulf-cloud", batch="h100-9", into=[
        {"batch": "h100-9a", "quantity": 4, "serials": serials[:4]},
        {"batch": "h100-9b", "quantity": 4, "serials": serials[4:]},
    ]))  # fmt: skip
    assert [sent.seq for sent in story] == [8, 9, 10, 11, 12]
    return told


@pytest.mark.parametrize(
    ("as_of", "status", "latest"),
    [
        ("8", "fabricated", 0),
        ("9", "in_transit", 1),
        ("10", "delivered", 2),
        ("11", "installed", 3),
        ("12", "split", 4),
        ("2026-03-06T12:00:00Z", "fabricated", 0),
        ("2026-03-06T12:59:59.999999Z", "fabricated", 0),
        ("2026-03-06T13:00:00Z", "in_transit", 1),
        ("2026-03-06T13:30:00Z", "in_transit", 1),  # the export's `at`, not yet recorded
        ("2026-03-06T16:00:00.000Z", "delivered", 2),
        ("2026-03-06T19:59:59Z", "installed", 3),
        ("2030-01-01T00:00:00Z", "split", 4),
    ],
)
def test_a_batch_as_of_an_earlier_seq_or_time_is_as_it_was_then(
    journey: Bench, as_of: str, status: str, latest: int
) -> None:
    batch = journey.desk.read("/v1/batches/h100-9", as_of=as_of)

    assert (batch["status"], batch["last_seq"]) == (status, journey.sent[latest].seq)
    assert batch["head"] == journey.sent[latest].receipt["envelope_hash"]


def test_a_batch_as_of_a_moment_shows_that_moments_whole_view(journey: Bench) -> None:
    desk, story = journey.desk, journey.sent

    assert desk.read("/v1/batches/h100-9", as_of="2026-03-06T15:00:00Z") == view(
        "h100-9", story[1], model="H100", quantity=8, status="in_transit", owner="nvidia",
        holder="nvidia", to="gulf-cloud", serials_known=True,
    )  # fmt: skip
    assert desk.read("/v1/batches/h100-9", as_of=11) == view(
        "h100-9", story[3], model="H100", quantity=8, status="installed", owner="gulf-cloud",
        holder="gulf-cloud", country="AE", site="dxb-1", serials_known=True,
    )  # fmt: skip


def test_history_as_of_a_moment_lists_only_the_entries_up_to_it(journey: Bench) -> None:
    desk, story = journey.desk, journey.sent

    by_seq = desk.read("/v1/batches/h100-9a/history", as_of=12)["entries"]
    by_time = desk.read("/v1/batches/h100-9/history", as_of="2026-03-06T13:30:00Z")["entries"]
    now = desk.read("/v1/batches/h100-9/history")["entries"]

    assert by_seq == [sent.entry() for sent in story]
    assert by_time == [sent.entry() for sent in story[:2]]
    assert now == [sent.entry() for sent in story]


def test_a_serial_as_of_before_the_split_is_held_by_the_parent(journey: Bench) -> None:
    def holder(**as_of: str | int) -> Any:
        return journey.desk.read("/v1/serials/J-5", **as_of)["batch"]

    assert holder() == "h100-9b"
    assert holder(as_of=11) == "h100-9"
    assert holder(as_of="2026-03-06T19:00:00Z") == "h100-9"
    assert holder(as_of=12) == "h100-9b"
    assert holder(as_of="2026-03-06T20:00:00Z") == "h100-9b"


def test_an_allocation_as_of_a_moment_counts_what_the_party_had_then(journey: Bench) -> None:
    def at(as_of: str | int) -> Json:
        return counted(journey.desk.read("/v1/parties/gulf-cloud/allocation", as_of=as_of))

    empty = allocation("gulf-cloud", {}, {}, {}, {}, [])
    in_transit = allocation("gulf-cloud", {"in_transit": 8}, {"AE": 8}, {}, {"H100": 8},
                            ["h100-9"])  # fmt: skip
    installed = allocation("gulf-cloud", {"installed": 8}, {"AE": 8}, {"dxb-1": 8},
                           {"H100": 8}, ["h100-9"])  # fmt: skip

    assert at(8) == empty
    assert at("2026-03-06T13:00:00Z") == in_transit
    assert at(9) == in_transit
    assert at(11) == installed
    assert at("2026-03-06T19:59:59Z") == installed
    assert at(12) == {**installed, "batches": ["h100-9a", "h100-9b"]}
    assert counted(journey.desk.read("/v1/parties/gulf-cloud/allocation")) == at(12)


@pytest.mark.parametrize(
    "as_of", ["7", "2026-03-06T11:59:59Z"], ids=["seq before it", "time before it"]
)
@pytest.mark.parametrize("read", ["batch", "history", "serial"])
def test_reading_a_batch_or_serial_as_of_before_it_existed_is_404(
    journey: Bench, read: str, as_of: str
) -> None:
    refused(journey.desk.client.get(STATE_READS[read], params={"as_of": as_of}), 404, "not_found")


@pytest.mark.parametrize("read", ["batch", "history"])
def test_a_split_child_as_of_before_the_split_is_404(journey: Bench, read: str) -> None:
    path = STATE_READS[read].replace("h100-9", "h100-9a")

    refused(journey.desk.client.get(path, params={"as_of": 11}), 404, "not_found")
    assert journey.desk.client.get(path, params={"as_of": 12}).status_code == 200


@pytest.mark.parametrize("read", STATE_READS)
def test_as_of_the_last_seq_is_now_and_any_seq_past_it_is_404(journey: Bench, read: str) -> None:
    path, size = STATE_READS[read], journey.desk.size()

    assert journey.desk.read(path, as_of=size - 1) == journey.desk.read(path)
    for past in [size, size + 1]:
        refused(journey.desk.client.get(path, params={"as_of": past}), 404, "not_found")


@pytest.mark.parametrize("read", STATE_READS)
def test_an_integer_as_of_past_the_end_is_404_however_large(journey: Bench, read: str) -> None:
    """An integer N past the end is 404 (section 6), even one too large for 64 bits."""
    for past in [2**63, 10**20]:
        refused(
            journey.desk.client.get(STATE_READS[read], params={"as_of": past}), 404, "not_found"
        )


@pytest.mark.parametrize(
    "as_of",
    ["yesterday", "2026-03-06", "2026-03-06T12:00:00", "2026-03-06T16:00:00+04:00",
     "2026-03-06 12:00:00Z", "2026-02-30T12:00:00Z", "-1", "1.5", "0x10"],
)  # fmt: skip
@pytest.mark.parametrize("read", STATE_READS)
def test_a_malformed_as_of_is_400_with_the_error_body(
    journey: Bench, read: str, as_of: str
) -> None:
    refused(journey.desk.client.get(STATE_READS[read], params={"as_of": as_of}), 400, "bad_request")


def test_allocation_of_an_unregistered_party_is_404_as_of_any_moment(journey: Bench) -> None:
    for as_of in [None, 9, "2026-03-06T13:00:00Z"]:
        params = {} if as_of is None else {"as_of": as_of}
        response = journey.desk.client.get("/v1/parties/nobody/allocation", params=params)
        refused(response, 404, "not_found")


# -- The read models ---------------------------------------------------------------------------


def test_rebuilding_the_read_models_from_the_log_gives_exactly_the_live_ones(
    scene: Bench,
) -> None:
    live = assert_rebuild_equals_live(scene.ledger)

    for table in ("rm_batch_log", "rm_involved", "rm_serials", "rm_flags"):
        assert live[table], f"the scene leaves {table} something to compare"
    assert live["rm_site_counts"]
    assert live["rm_owner_counts"]
    assert live["rm_position"] == [("read_models", scene.ledger.size())]


def test_a_ledger_opened_afresh_on_the_same_store_answers_as_the_live_one(
    scene: Bench,
) -> None:
    live, fresh = scene.ledger, Ledger(scene.store, clock=scene.clock)
    parties = ["nvidia", "gulf-cloud", "desert-ai", "fastfreight", "audit-office", "bis"]
    rows = read_model_rows(live)
    batches = sorted({batch for _, batch in rows["rm_involved"]})
    serials = sorted({serial for serial, *_ in rows["rm_serials"]})
    moments = [None, *(str(seq) for seq in range(8, live.size(), 5))]

    assert (len(batches), len(serials)) == (13, 330)
    assert [fresh.batch(b) for b in batches] == [live.batch(b) for b in batches]
    for moment in moments:
        assert [fresh.allocation(p, fresh.as_of(moment)) for p in parties] == [
            live.allocation(p, live.as_of(moment)) for p in parties
        ]
        assert [_holder(fresh, s, moment) for s in serials] == [
            _holder(live, s, moment) for s in serials
        ]


def _holder(ledger: Ledger, serial: str, moment: str | None) -> str | None:
    try:
        return ledger.serial(serial, ledger.as_of(moment)).batch
    except NotFound:
        return None
