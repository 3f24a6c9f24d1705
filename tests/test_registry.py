"""The registry, straight on `Ledger`: genesis, roles, keys, listings and sites.

PROTOCOL.md section 4, "Trust root and registry". Every accepted envelope takes the next dense
`seq`; every refusal leaves the ledger's size as it was (section 5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.errors import (
    BadSignature,
    Conflict,
    InvalidTransition,
    LedgerError,
    NotAuthorized,
    NotFound,
)
from ledger.views import Receipt
from tests.support import World, signer

Json = dict[str, Any]


def accept(ledger: Ledger, envelope: Json) -> Receipt:
    """Submit an envelope that must be accepted with the next dense seq."""
    size = ledger.size()
    outcome = ledger.submit(envelope)
    assert not outcome.repeated
    assert outcome.receipt.seq == size
    assert ledger.size() == size + 1
    return outcome.receipt


def refuse(ledger: Ledger, envelope: Json, error: type[LedgerError]) -> LedgerError:
    """Submit an envelope that must be refused with `error`, storing nothing."""
    size = ledger.size()
    entries = ledger.log_entries(0, 1000)
    with pytest.raises(error) as caught:
        ledger.submit(envelope)
    assert ledger.size() == size
    assert ledger.log_entries(0, 1000) == entries
    return caught.value


def party(
    world: World, party_id: str, roles: list[str], *keys: str, actor: str = "bis", by: str = ""
) -> Json:
    """`actor` (signing with key `by`, default its own) registers `party_id` with the keys
    named (default: its own), every one of them signing too."""
    names = list(keys) or [party_id]
    spec = {
        "id": party_id,
        "name": party_id.title(),
        "roles": roles,
        "country": "US",
        "keys": [signer(n).public_key_b64 for n in names],
    }
    event = world.event("party.registered", actor, party=spec)
    return world.envelope(event, by or actor, *names)


def add_key(world: World, party_id: str, key: str, actor: str = "bis", by: str = "") -> Json:
    event = world.event("party.key_added", actor, party=party_id, key=signer(key).public_key_b64)
    return world.envelope(event, by or actor, key)


def revoke(world: World, party_id: str, key: str, actor: str = "bis", **extra: Any) -> Json:
    event = world.event(
        "party.key_revoked", actor, party=party_id, keyid=signer(key).key_id, **extra
    )
    return world.envelope(event, actor)


def list_party(world: World, party_id: str, name: str = "entity", actor: str = "bis") -> Json:
    event = world.event("party.listed", actor, party=party_id, list=name, reason="diversion")
    return world.envelope(event, actor)


def delist(world: World, party_id: str, name: str = "entity", actor: str = "bis") -> Json:
    return world.envelope(world.event("party.delisted", actor, party=party_id, list=name), actor)


def site(world: World, site_id: str, operator: str, actor: str = "", key: str = "") -> Json:
    spec = {"id": site_id, "operator": operator, "country": "AE", "name": site_id}
    event = world.event("site.registered", actor or operator, site=spec)
    return world.envelope(event, key or actor or operator)


def genesis_like(
    world: World, party_id: str, roles: list[str], keys: list[str], *signers: str
) -> Json:
    spec = {
        "id": party_id,
        "name": "Root",
        "roles": roles,
        "country": "US",
        "keys": [signer(k).public_key_b64 for k in keys],
    }
    return world.envelope(world.event("party.registered", party_id, party=spec), *signers)


# -- genesis ------------------------------------------------------------------------------------


def test_genesis_is_the_trust_root_authority_registering_itself_at_seq_0(
    ledger: Ledger, world: World
) -> None:
    receipt = accept(ledger, world.genesis())

    assert (receipt.seq, receipt.type) == (0, "party.registered")
    info = ledger.ledger_info()
    assert info.authority.party == "bis"
    assert info.authority.key == signer("bis").public_key_b64


def test_genesis_may_list_more_keys_when_every_one_signs(ledger: Ledger, world: World) -> None:
    envelope = genesis_like(world, "bis", ["authority"], ["bis", "bis#2"], "bis", "bis#2")

    accept(ledger, envelope)

    accept(ledger, party(world, "nvidia", ["vendor"], actor="bis"))


def test_genesis_authority_chooses_its_own_party_id(ledger: Ledger, world: World) -> None:
    accept(ledger, genesis_like(world, "root", ["authority"], ["bis"], "bis"))

    assert ledger.ledger_info().authority.party == "root"
    accept(ledger, party(world, "nvidia", ["vendor"], actor="root", by="bis"))


BAD_GENESIS: list[Any] = [
    pytest.param(
        lambda w: genesis_like(w, "ofac", ["authority"], ["ofac"], "ofac"),
        NotAuthorized,
        id="another-authority-registers-itself",
    ),
    pytest.param(
        lambda w: genesis_like(w, "bis", ["vendor"], ["bis"], "bis"),
        NotAuthorized,
        id="trust-root-key-without-authority-role",
    ),
    pytest.param(
        lambda w: genesis_like(w, "bis", ["authority"], ["bis#2"], "bis#2"),
        NotAuthorized,
        id="trust-root-key-not-listed",
    ),
    pytest.param(
        lambda w: genesis_like(w, "bis", ["authority"], ["bis", "bis#2"], "bis#2"),
        NotAuthorized,
        id="trust-root-key-listed-but-not-signing",
    ),
    pytest.param(
        lambda w: genesis_like(w, "bis", ["authority"], ["bis#2"], "bis#2", "bis"),
        BadSignature,
        id="trust-root-key-signing-but-not-listed",
    ),
    pytest.param(
        lambda w: party(w, "nvidia", ["vendor"]),
        BadSignature,
        id="trust-root-registers-another-party-first",
    ),
    pytest.param(
        lambda w: _with_stranger(w.genesis()),
        BadSignature,
        id="genesis-with-a-stranger-signature",
    ),
    pytest.param(
        lambda w: site(w, "dxb-1", "gulf-cloud"),
        BadSignature,
        id="site-first",
    ),
    pytest.param(
        lambda w: list_party(w, "bis"),
        BadSignature,
        id="listing-first",
    ),
]


def _with_stranger(envelope: Json) -> Json:
    """The envelope with one more signature, by the unregistered key `stranger`."""
    extra = World.envelope({}, "stranger")["signatures"]
    return {**envelope, "signatures": [*envelope["signatures"], *extra]}


@pytest.mark.parametrize(("build", "error"), BAD_GENESIS)
def test_anything_but_the_trust_root_genesis_first_is_refused_and_stores_nothing(
    ledger: Ledger,
    world: World,
    build: Callable[[World], Json],
    error: type[LedgerError],
) -> None:
    refuse(ledger, build(world), error)

    assert ledger.size() == 0
    assert accept(ledger, world.genesis()).seq == 0


def test_second_self_registered_authority_after_genesis_is_refused(
    ledger: Ledger, world: World
) -> None:
    accept(ledger, world.genesis())

    refuse(ledger, genesis_like(world, "ofac", ["authority"], ["ofac"], "ofac"), NotAuthorized)


def test_trust_root_key_cannot_found_a_second_genesis_under_another_id(
    ledger: Ledger, world: World
) -> None:
    accept(ledger, world.genesis())

    refuse(ledger, genesis_like(world, "root", ["authority"], ["bis"], "bis"), NotAuthorized)


# -- roles --------------------------------------------------------------------------------------

REGISTRY_ACTIONS: list[Any] = [
    pytest.param(lambda w, a: party(w, "newco", ["buyer"], actor=a), id="register-party"),
    pytest.param(lambda w, a: add_key(w, "desert-ai", "desert-ai#2", actor=a), id="add-key"),
    pytest.param(lambda w, a: revoke(w, "desert-ai", "desert-ai", actor=a), id="revoke-key"),
    pytest.param(lambda w, a: list_party(w, "desert-ai", actor=a), id="list"),
]


@pytest.mark.parametrize("actor", ["nvidia", "gulf-cloud", "fastfreight", "audit-office"])
@pytest.mark.parametrize("action", REGISTRY_ACTIONS)
def test_only_an_authority_writes_the_registry(
    populated: Ledger, world: World, actor: str, action: Callable[[World, str], Json]
) -> None:
    refuse(populated, action(world, actor), NotAuthorized)


@pytest.mark.parametrize("actor", ["nvidia", "gulf-cloud", "fastfreight", "audit-office"])
def test_only_an_authority_delists(populated: Ledger, world: World, actor: str) -> None:
    accept(populated, list_party(world, "desert-ai"))

    refuse(populated, delist(world, "desert-ai", actor=actor), NotAuthorized)


def test_second_authority_registers_parties_keys_and_listings(
    populated: Ledger, world: World
) -> None:
    accept(populated, party(world, "ofac", ["authority"]))

    accept(populated, party(world, "newco", ["buyer"], actor="ofac"))
    accept(populated, add_key(world, "newco", "newco#2", actor="ofac"))
    accept(populated, revoke(world, "newco", "newco", actor="ofac"))
    accept(populated, list_party(world, "newco", actor="ofac"))
    accept(populated, delist(world, "newco", actor="ofac"))


GENESIS_ONLY: list[Any] = [
    pytest.param(lambda w: party(w, "mofa", ["authority"], actor="ofac"), id="register-authority"),
    pytest.param(
        lambda w: party(w, "mixed", ["vendor", "authority"], actor="ofac"),
        id="register-party-with-authority-role",
    ),
    pytest.param(lambda w: add_key(w, "bis", "bis#2", actor="ofac"), id="add-key-to-genesis"),
    pytest.param(lambda w: add_key(w, "ofac", "ofac#2", actor="ofac"), id="add-key-to-itself"),
]


@pytest.mark.parametrize("build", GENESIS_ONLY)
def test_only_the_genesis_authority_registers_authorities_or_adds_their_keys(
    populated: Ledger, world: World, build: Callable[[World], Json]
) -> None:
    accept(populated, party(world, "ofac", ["authority"]))

    refuse(populated, build(world), NotAuthorized)


def test_genesis_authority_registers_an_authority_and_adds_a_key_it_signs_with(
    populated: Ledger, world: World
) -> None:
    accept(populated, party(world, "ofac", ["authority"]))
    accept(populated, add_key(world, "ofac", "ofac#2"))

    event = world.event("party.listed", "ofac", party="desert-ai", list="denied", reason="r")
    accept(populated, world.envelope(event, "ofac#2"))


# -- keys ---------------------------------------------------------------------------------------


def test_added_key_signs_for_its_party(populated: Ledger, world: World) -> None:
    accept(populated, add_key(world, "gulf-cloud", "gulf-cloud#2"))

    accept(populated, site(world, "dxb-2", "gulf-cloud", key="gulf-cloud#2"))
    accept(populated, site(world, "dxb-3", "gulf-cloud", key="gulf-cloud"))


def test_revoked_key_no_longer_signs_but_the_party_other_key_does(
    populated: Ledger, world: World
) -> None:
    accept(populated, add_key(world, "gulf-cloud", "gulf-cloud#2"))
    accept(populated, revoke(world, "gulf-cloud", "gulf-cloud"))

    refuse(populated, site(world, "dxb-2", "gulf-cloud"), BadSignature)
    accept(populated, site(world, "dxb-2", "gulf-cloud", key="gulf-cloud#2"))


def test_party_whose_only_key_is_revoked_cannot_sign(populated: Ledger, world: World) -> None:
    accept(populated, revoke(world, "gulf-cloud", "gulf-cloud"))

    refuse(populated, site(world, "dxb-2", "gulf-cloud"), BadSignature)


def test_revocation_may_say_since_when_the_key_was_compromised(
    populated: Ledger, world: World
) -> None:
    receipt = accept(
        populated,
        revoke(world, "gulf-cloud", "gulf-cloud", compromised_since="2026-03-01T08:30:00Z"),
    )

    assert receipt.type == "party.key_revoked"
    refuse(populated, site(world, "dxb-2", "gulf-cloud"), BadSignature)


def test_revoking_a_key_twice_is_an_invalid_transition(populated: Ledger, world: World) -> None:
    accept(populated, revoke(world, "gulf-cloud", "gulf-cloud"))

    refuse(populated, revoke(world, "gulf-cloud", "gulf-cloud"), InvalidTransition)


TAKEN_KEYS: list[Any] = [
    pytest.param(
        lambda w: party(w, "newco", ["buyer"], "gulf-cloud"), id="new-party-with-active-key"
    ),
    pytest.param(
        lambda w: party(w, "newco", ["buyer"], "newco", "gulf-cloud"),
        id="new-party-with-active-key-among-others",
    ),
    pytest.param(lambda w: add_key(w, "desert-ai", "gulf-cloud"), id="added-to-another-party"),
    pytest.param(lambda w: add_key(w, "gulf-cloud", "gulf-cloud"), id="added-to-its-own-party"),
]


@pytest.mark.parametrize("build", TAKEN_KEYS)
def test_a_key_belongs_to_one_party_only(
    populated: Ledger, world: World, build: Callable[[World], Json]
) -> None:
    refuse(populated, build(world), Conflict)


REVOKED_KEYS: list[Any] = [
    pytest.param(lambda w: party(w, "newco", ["buyer"], "gulf-cloud"), id="new-party"),
    pytest.param(lambda w: add_key(w, "desert-ai", "gulf-cloud"), id="another-party"),
    pytest.param(lambda w: add_key(w, "gulf-cloud", "gulf-cloud"), id="the-same-party-again"),
]


@pytest.mark.parametrize("build", REVOKED_KEYS)
def test_a_revoked_key_is_never_registered_again(
    populated: Ledger, world: World, build: Callable[[World], Json]
) -> None:
    accept(populated, revoke(world, "gulf-cloud", "gulf-cloud"))

    refuse(populated, build(world), Conflict)


def test_authority_cannot_give_its_own_key_to_another_party(
    populated: Ledger, world: World
) -> None:
    accept(populated, add_key(world, "bis", "bis#2"))
    key = signer("bis").public_key_b64

    given = world.event("party.key_added", "bis", party="desert-ai", key=key)
    refuse(populated, world.envelope(given, "bis#2", "bis"), Conflict)
    spec = {"id": "newco", "name": "N", "roles": ["buyer"], "country": "AE", "keys": [key]}
    registered = world.event("party.registered", "bis", party=spec)
    refuse(populated, world.envelope(registered, "bis#2", "bis"), Conflict)


def test_signature_by_a_key_the_event_introduces_counts_for_the_new_party_only(
    populated: Ledger, world: World
) -> None:
    """Section 4: "the keys a registry event introduces count as the new party's". So bis
    giving away its own key, signing once with it, has not signed as the actor: 403."""
    key = signer("bis").public_key_b64
    given = world.event("party.key_added", "bis", party="desert-ai", key=key)

    refuse(populated, world.envelope(given, "bis"), NotAuthorized)


def test_key_refused_in_a_refused_registration_stays_free(populated: Ledger, world: World) -> None:
    refuse(populated, party(world, "nvidia", ["vendor"], "fresh"), Conflict)

    accept(populated, party(world, "newco", ["buyer"], "fresh"))


def test_genesis_authority_cannot_revoke_its_last_key(populated: Ledger, world: World) -> None:
    refuse(populated, revoke(world, "bis", "bis"), InvalidTransition)


def test_genesis_authority_revokes_a_key_once_it_has_another(
    populated: Ledger, world: World
) -> None:
    accept(populated, add_key(world, "bis", "bis#2"))

    accept(populated, revoke(world, "bis", "bis"))

    refuse(populated, list_party(world, "desert-ai"), BadSignature)
    event = world.event("party.key_revoked", "bis", party="bis", keyid=signer("bis#2").key_id)
    refuse(populated, world.envelope(event, "bis#2"), InvalidTransition)
    listing = world.event("party.listed", "bis", party="desert-ai", list="entity", reason="r")
    accept(populated, world.envelope(listing, "bis#2"))


def test_another_authority_may_revoke_all_its_keys(populated: Ledger, world: World) -> None:
    accept(populated, party(world, "ofac", ["authority"]))

    accept(populated, revoke(world, "ofac", "ofac"))


def test_revoking_an_unknown_key_of_a_party_is_not_found(populated: Ledger, world: World) -> None:
    refuse(populated, revoke(world, "gulf-cloud", "stranger"), NotFound)


# -- listings -----------------------------------------------------------------------------------


def test_party_is_listed_delisted_and_listed_again(populated: Ledger, world: World) -> None:
    accept(populated, list_party(world, "desert-ai"))
    accept(populated, delist(world, "desert-ai"))

    accept(populated, list_party(world, "desert-ai"))


def test_party_may_be_on_several_lists_at_once(populated: Ledger, world: World) -> None:
    accept(populated, list_party(world, "desert-ai", "entity"))
    accept(populated, list_party(world, "desert-ai", "unverified"))
    accept(populated, list_party(world, "desert-ai", "denied"))

    accept(populated, delist(world, "desert-ai", "unverified"))
    refuse(populated, delist(world, "desert-ai", "unverified"), InvalidTransition)
    accept(populated, delist(world, "desert-ai", "entity"))


def test_listing_a_party_twice_on_one_list_is_an_invalid_transition(
    populated: Ledger, world: World
) -> None:
    accept(populated, list_party(world, "desert-ai"))

    refuse(populated, list_party(world, "desert-ai"), InvalidTransition)


def test_delisting_a_party_not_on_the_list_is_an_invalid_transition(
    populated: Ledger, world: World
) -> None:
    accept(populated, list_party(world, "desert-ai", "entity"))

    refuse(populated, delist(world, "desert-ai", "denied"), InvalidTransition)


def test_listing_an_unknown_party_is_not_found(populated: Ledger, world: World) -> None:
    refuse(populated, list_party(world, "ghost"), NotFound)


# -- sites --------------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", ["gulf-cloud", "nvidia", "fastfreight"])
def test_vendor_buyer_or_carrier_registers_its_own_site(
    populated: Ledger, world: World, operator: str
) -> None:
    accept(populated, site(world, "new-site", operator))


def test_authority_registers_a_site_for_its_operator(populated: Ledger, world: World) -> None:
    accept(populated, site(world, "dxb-2", "gulf-cloud", actor="bis"))


def test_second_authority_registers_a_site_for_an_operator(populated: Ledger, world: World) -> None:
    accept(populated, party(world, "ofac", ["authority"]))

    accept(populated, site(world, "dxb-2", "gulf-cloud", actor="ofac"))


SITE_REFUSALS: list[Any] = [
    pytest.param(
        lambda w: site(w, "dxb-2", "gulf-cloud", actor="desert-ai"),
        NotAuthorized,
        id="another-buyer-for-the-operator",
    ),
    pytest.param(
        lambda w: site(w, "dxb-2", "gulf-cloud", actor="audit-office"),
        NotAuthorized,
        id="investigator-for-the-operator",
    ),
    pytest.param(
        lambda w: site(w, "aud-1", "audit-office"), NotAuthorized, id="investigator-operates"
    ),
    pytest.param(
        lambda w: site(w, "bis-1", "audit-office", actor="bis"),
        NotAuthorized,
        id="authority-for-an-investigator",
    ),
    pytest.param(
        lambda w: site(w, "bis-1", "bis", actor="bis"), NotAuthorized, id="authority-operates"
    ),
    pytest.param(lambda w: site(w, "gh-1", "ghost", actor="bis"), NotFound, id="unknown-operator"),
    pytest.param(lambda w: site(w, "dxb-1", "gulf-cloud"), Conflict, id="reused-site-id"),
    pytest.param(
        lambda w: site(w, "dxb-1", "desert-ai"), Conflict, id="reused-site-id-other-operator"
    ),
    pytest.param(
        lambda w: site(w, "tsmc-f18", "nvidia", actor="bis"),
        Conflict,
        id="reused-site-id-by-authority",
    ),
]


@pytest.mark.parametrize(("build", "error"), SITE_REFUSALS)
def test_site_refusals_store_nothing(
    populated: Ledger,
    world: World,
    build: Callable[[World], Json],
    error: type[LedgerError],
) -> None:
    refuse(populated, build(world), error)


def test_site_of_an_operator_registered_later_in_the_ledger(
    populated: Ledger, world: World
) -> None:
    accept(populated, party(world, "newco", ["carrier"]))

    accept(populated, site(world, "newco-1", "newco"))


def test_registry_receipts_are_dense_from_genesis(ledger: Ledger, world: World) -> None:
    seqs = [
        accept(ledger, world.genesis()).seq,
        accept(ledger, party(world, "nvidia", ["vendor"])).seq,
        accept(ledger, site(world, "tsmc-f18", "nvidia")).seq,
    ]
    refuse(ledger, site(world, "tsmc-f18", "nvidia"), Conflict)
    seqs.append(accept(ledger, list_party(world, "nvidia", "unverified")).seq)

    assert seqs == [0, 1, 2, 3]
    assert [e.seq for e in ledger.log_entries().entries] == [0, 1, 2, 3]
