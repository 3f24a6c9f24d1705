"""Rules a fresh-eyes review found unguarded: introduced keys never stand for the actor, a
storage failure leaves nothing behind, and a serial stays unique through deliveries."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from ledger.application import Ledger
from ledger.canonical import canonical
from ledger.errors import Conflict, NotAuthorized
from tests.support import World, signer


def head_of(envelope: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(envelope)).hexdigest()


def fabricate(ledger: Ledger, world: World, batch: str, serials: list[str]) -> dict[str, Any]:
    event = world.event("batch.fabricated", "nvidia", batch=batch, model="H200",
                        quantity=len(serials), country="TW", serials=serials)  # fmt: skip
    envelope = world.envelope(event, "nvidia")
    ledger.submit(envelope)
    return envelope


def test_a_new_key_alone_cannot_sign_for_the_authority_that_adds_it(
    populated: Ledger, world: World
) -> None:
    size = populated.size()
    key = signer("intruder").public_key_b64
    event = world.event("party.key_added", "bis", party="bis", key=key)
    with pytest.raises(NotAuthorized, match="registered before this event"):
        populated.submit(world.envelope(event, "intruder"))
    assert populated.size() == size


def test_a_new_partys_key_alone_cannot_sign_its_registration_for_the_authority(
    populated: Ledger, world: World
) -> None:
    size = populated.size()
    party = {"id": "rogue", "name": "Rogue", "roles": ["buyer"], "country": "AE",
             "keys": [signer("rogue").public_key_b64]}  # fmt: skip
    with pytest.raises(NotAuthorized):
        populated.submit(
            world.envelope(world.event("party.registered", "bis", party=party), "rogue")
        )
    assert populated.size() == size


def test_a_storage_failure_leaves_no_uncommitted_state_behind(
    populated: Ledger, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = fabricate(populated, world, "X-1", ["x-1", "x-2"])
    export = world.envelope(
        world.event("batch.exported", "nvidia", batch="X-1", prev=head_of(made), to="gulf-cloud",
                    destination="AE"),
        "nvidia",
    )  # fmt: skip
    size, before = populated.size(), populated.batch("X-1")

    def database_is_locked(*_: Any, **__: Any) -> Any:
        raise OperationalError("database is locked")

    with monkeypatch.context() as patch:
        patch.setattr(populated.recorder, "insert_events", database_is_locked)
        with pytest.raises(OperationalError):
            populated.submit(export)

    assert populated.size() == size
    assert populated.batch("X-1") == before
    assert populated.submit(export).receipt.seq == size
    reopened = Ledger(populated.store, clock=populated.clock)
    assert reopened.batch("X-1") == populated.batch("X-1")


def test_a_delivery_cannot_name_a_serial_another_batch_holds(
    populated: Ledger, world: World
) -> None:
    fabricate(populated, world, "A-1", ["a-1", "a-2"])
    made = fabricate(populated, world, "B-1", ["b-1", "b-2"])
    export = world.envelope(
        world.event("batch.exported", "nvidia", batch="B-1", prev=head_of(made), to="gulf-cloud",
                    destination="AE"),
        "nvidia",
    )  # fmt: skip
    populated.submit(export)
    size = populated.size()
    deliver = world.event("batch.delivered", "gulf-cloud", batch="B-1", prev=head_of(export),
                          site="dxb-1", quantity=2, serials=["a-1", "new-1"])  # fmt: skip
    with pytest.raises(Conflict, match="held by batch 'A-1'"):
        populated.submit(world.envelope(deliver, "gulf-cloud"))
    assert populated.size() == size
    assert populated.serial("a-1").batch == "A-1"


def test_a_serial_first_seen_at_a_delivery_cannot_be_fabricated_again(
    populated: Ledger, world: World
) -> None:
    made = fabricate(populated, world, "C-1", ["c-1"])
    export = world.envelope(
        world.event("batch.exported", "nvidia", batch="C-1", prev=head_of(made), to="gulf-cloud",
                    destination="AE"),
        "nvidia",
    )  # fmt: skip
    populated.submit(export)
    deliver = world.event("batch.delivered", "gulf-cloud", batch="C-1", prev=head_of(export),
                          site="dxb-1", quantity=1, serials=["never-shipped"])  # fmt: skip
    populated.submit(world.envelope(deliver, "gulf-cloud"))
    assert populated.serial("never-shipped").batch == "C-1"
    with pytest.raises(Conflict):
        fabricate(populated, world, "D-1", ["never-shipped"])
