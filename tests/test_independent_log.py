"""The transparency log of a real `chipledger serve`, checked by an independent verifier.

What this proves, against the server as a user runs it (PROTOCOL.md sections 6 and 8):

- right after each accepted envelope (registrations, sites, a custody chain, one batch request),
  `GET /v1/log/checkpoint` returns a C2SP signed note that verifies under the log key this test
  read from the file `chipledger init` wrote (never only from the server) and under
  `GET /v1/log/key`; its origin is the ledger's (a non-default `--origin`), its size is exactly
  the envelope's `seq` + 1, and its root is the RFC 6962 root of every entry's canonical
  envelope bytes as `GET /v1/log/entries` serves them; each receipt's `leaf_hash` is
  SHA-256(0x00 || canonical envelope);
- every checkpoint seen is kept: every inclusion proof (every `seq`, at every kept size and at
  the default size) verifies against that checkpoint's root and is RFC 9162's PATH computed
  locally; every pair of kept checkpoints is proved consistent, by RFC 9162's PROOF;
- a checkpoint names no time, so without writes it is byte-identical, and it survives a restart;
- out-of-range proof requests answer a 4xx with the section 6 error body and change nothing;
- the checks are not vacuous: a flipped byte of a proof hash, of a root or of a checkpoint, or
  the wrong leaf, is rejected by the verifier.

The client is tests/independent/client.py and the verifier tests/independent/tlog.py, both
written from the public texts; nothing here imports `ledger`, `api`, `tools` or `tests.support`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.independent.client import (
    DEFAULT_ORIGIN,
    JSONObject,
    LedgerClient,
    ServerProcess,
    Signer,
    Timeline,
    canonical,
    envelope_hash,
    init_ledger,
    make_event,
    now,
    run_cli,
    sign,
)
from tests.independent.tlog import (
    Checkpoint,
    consistency_proof_of,
    inclusion_proof_of,
    leaf_hash,
    open_checkpoint,
    parse_checkpoint,
    parse_vkey,
    root_of,
    verify_consistency,
    verify_inclusion,
    verify_signed_note,
    vkey_for,
)

ORIGIN = "log-test.example/chipledger"  # not the default: the checkpoint must carry this one
INCLUSION_FIELDS = {"seq", "size", "leaf_hash", "hashes"}
CONSISTENCY_FIELDS = {"from", "to", "hashes"}
PAGE = 100  # the entries endpoint's default limit; the helper pages through the log with it


# --- the ledger under test ------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What the log served right after one accepted write (one envelope, or one batch)."""

    receipts: list[JSONObject]
    note: str
    note_type: str
    key: str
    entries: list[bytes]  # canonical envelope bytes of every entry, as served at that moment


@dataclass
class LogWorld:
    """One ledger, its parties, every envelope accepted in `seq` order and what the log said."""

    origin: str
    vkey: str  # from the log key file `chipledger init` wrote: never taken from the server
    server: ServerProcess
    client: LedgerClient
    timeline: Timeline
    signers: dict[str, Signer] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)  # batch -> envelope_hash of its head
    sent: list[JSONObject] = field(default_factory=list)
    observed: list[Observed] = field(default_factory=list)
    batch_index: int = -1  # which `observed` is the batch request
    _names: Iterator[int] = field(default_factory=itertools.count)

    def name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._names)}"

    def keys(self, *parties: str) -> list[Signer]:
        return [self.signers[party] for party in parties]

    # the log's endpoints

    def get(self, path: str, **params: int | str) -> httpx.Response:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return self.client.get(f"{path}?{query}" if query else path)

    def checkpoint_note(self) -> str:
        response = self.client.get("/v1/log/checkpoint")
        assert response.status_code == 200, response.text
        return response.text

    def entries(self) -> list[bytes]:
        """The canonical bytes of every entry's envelope, paged through `/v1/log/entries`."""
        found: list[bytes] = []
        while True:
            response = self.get("/v1/log/entries", start=len(found), limit=PAGE)
            assert response.status_code == 200, response.text
            page = response.json()["entries"]
            for offset, entry in enumerate(page):
                assert entry["seq"] == len(found) + offset, entry
            found.extend(canonical(entry["envelope"]) for entry in page)
            if len(page) < PAGE:
                return found

    def inclusion(self, seq: int, size: int | None = None) -> JSONObject:
        params = {"seq": seq} if size is None else {"seq": seq, "size": size}
        response = self.get("/v1/log/inclusion", **params)
        assert response.status_code == 200, f"inclusion {params}: {response.text}"
        body: JSONObject = response.json()
        assert set(body) == INCLUSION_FIELDS, body
        return body

    def consistency(self, old: int, new: int) -> JSONObject:
        response = self.get("/v1/log/consistency", **{"from": old, "to": new})
        assert response.status_code == 200, f"consistency {old} -> {new}: {response.text}"
        body: JSONObject = response.json()
        assert set(body) == CONSISTENCY_FIELDS, body
        return body

    def size(self) -> int:
        return self.client.size()

    # writes, each followed at once by a look at the log

    def observe(self, receipts: list[JSONObject]) -> None:
        response = self.client.get("/v1/log/checkpoint")
        assert response.status_code == 200, response.text
        key = self.client.get("/v1/log/key")
        assert key.status_code == 200, key.text
        self.observed.append(
            Observed(
                receipts,
                response.text,
                response.headers.get("content-type", ""),
                key.text,
                self.entries(),
            )
        )

    def submit(self, event: JSONObject, signers: Sequence[Signer]) -> JSONObject:
        """Send one envelope; it must be accepted. Returns the envelope as sent."""
        envelope = sign(event, signers)
        response = self.client.post_event(envelope)
        assert response.status_code == 201, f"{event['type']}: {response.text}"
        self.sent.append(envelope)
        self.observe([response.json()])
        return envelope

    def submit_batch(self, items: Sequence[tuple[JSONObject, Sequence[Signer]]]) -> None:
        envelopes = [sign(event, signers) for event, signers in items]
        response = self.client.post_batch(envelopes)
        assert response.status_code == 201, response.text
        receipts: list[JSONObject] = response.json()["receipts"]
        self.sent.extend(envelopes)
        self.batch_index = len(self.observed)
        self.observe(receipts)

    # the events

    def genesis(self, bis: Signer) -> None:
        self.signers["bis"] = bis
        record = {
            "id": "bis",
            "name": "Bureau of Industry and Security",
            "roles": ["authority"],
            "country": "US",
            "keys": [bis.public_key_b64],
        }
        self.submit(self.make("party.registered", "bis", party=record), [bis])

    def make(self, type_: str, actor: str, **fields: Any) -> JSONObject:
        return make_event(type_, actor, origin=self.origin, at=self.timeline.next(), **fields)

    def party_event(self, role: str, country: str) -> tuple[str, JSONObject, list[Signer]]:
        party = self.name(role)
        signer = Signer.from_label(f"log {self.origin} {party}")
        self.signers[party] = signer
        record = {
            "id": party,
            "name": f"{party} Ltd",
            "roles": [role],
            "country": country,
            "keys": [signer.public_key_b64],
        }
        event = self.make("party.registered", "bis", party=record)
        return party, event, [self.signers["bis"], signer]

    def party(self, role: str, country: str = "AE") -> str:
        party, event, signers = self.party_event(role, country)
        self.submit(event, signers)
        return party

    def site(self, operator: str, country: str = "AE") -> str:
        site = self.name("site")
        record = {"id": site, "operator": operator, "country": country, "name": f"Site {site}"}
        self.submit(self.make("site.registered", operator, site=record), self.keys(operator))
        return site

    def batch_event(self, type_: str, actor: str, batch: str, **fields: Any) -> JSONObject:
        chain = {} if type_ == "batch.fabricated" else {"prev": self.heads[batch]}
        return self.make(type_, actor, batch=batch, **chain, **fields)

    def act(
        self, type_: str, actor: str, batch: str, *, signers: Sequence[str] = (), **fields: Any
    ) -> None:
        event = self.batch_event(type_, actor, batch, **fields)
        self.moved(event, self.submit(event, self.keys(*(signers or [actor]))))

    def moved(self, event: JSONObject, envelope: JSONObject) -> None:
        """`envelope` (of batch event `event`) is the new head of its batch and children."""
        head = envelope_hash(envelope)
        self.heads[event["batch"]] = head
        for child in event.get("into", []):
            self.heads[child["batch"]] = head

    def close(self) -> None:
        self.client.close()
        self.server.stop()

    # what was observed, checked

    def opened(self, observed: Observed) -> Checkpoint:
        return open_checkpoint(observed.note, self.vkey, self.origin)

    @property
    def leaves(self) -> list[bytes]:
        return self.observed[-1].entries

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint this test was served, in the order it saw them."""
        return [self.opened(o) for o in self.observed]


def log_vkey(origin: str, log_key: Path) -> str:
    """The verifier key of the log key file `chipledger init` wrote, built here from its seed."""
    return vkey_for(origin, Signer.from_key_file(log_key).public_key)


def start_world(directory: Path, origin: str | None) -> LogWorld:
    """`chipledger init` (with `--origin` when given), `serve` with open reads, and genesis."""
    bis = Signer.from_label(f"log authority {directory.name}")
    if origin is None:
        store, log_key = init_ledger(directory, bis)
        origin = DEFAULT_ORIGIN
    else:
        bis.write_files(directory, "bis")
        store, log_key = directory / "ledger.db", directory / "log.key"
        done = run_cli(
            "init",
            "--store",
            str(store),
            "--authority-key",
            str(directory / "bis.pub"),
            "--origin",
            origin,
            "--log-key",
            str(log_key),
        )
        assert done.returncode == 0, done.stdout + done.stderr
    server = ServerProcess(store, log_key, open_reads=True)
    server.start()
    timeline = Timeline(now() - timedelta(hours=2), timedelta(seconds=5))
    world = LogWorld(origin, log_vkey(origin, log_key), server, LedgerClient(server.url), timeline)
    world.signers["bis"] = bis
    return world


def populate(world: LogWorld) -> None:
    """A few dozen envelopes one by one, one batch request of six, then a few more."""
    world.genesis(world.signers["bis"])
    vendor = world.party("vendor", "US")
    buyer = world.party("buyer", "AE")
    other = world.party("buyer", "AE")
    carrier = world.party("carrier", "AE")
    world.party("investigator", "US")
    site_1, site_2 = world.site(buyer), world.site(buyer)
    other_site = world.site(other)
    world.site(carrier)
    # a custody chain: fabricated, exported, delivered, installed, relocated, transferred with
    # a site, split, and each child ended its own way
    batch = world.name("B")
    world.act("batch.fabricated", vendor, batch, model="H200", quantity=64, country="TW")
    world.act("batch.exported", vendor, batch, to=buyer, destination="AE")
    world.act("batch.delivered", buyer, batch, site=site_1, quantity=64)
    world.act("batch.installed", buyer, batch, site=site_1)
    world.act("batch.relocated", buyer, batch, site=site_2)
    world.act("batch.transferred", buyer, batch, signers=[buyer, other], to=other, site=other_site)
    children = [world.name(f"{batch}.c"), world.name(f"{batch}.c")]
    into = [{"batch": child, "quantity": 32} for child in children]
    world.act("batch.split", other, batch, into=into)
    world.act("batch.decommissioned", other, children[0], reason="End of life, shredded.")
    world.act("batch.reported_lost", other, children[1], reason="Not found at stocktake.")
    # a second batch, sold in place, then exported by its holder and delivered short
    second = world.name("B")
    world.act("batch.fabricated", vendor, second, model="H200", quantity=10, country="TW")
    world.act("batch.transferred", vendor, second, signers=[vendor, buyer], to=buyer)
    world.act("batch.exported", vendor, second, to=buyer, destination="AE")
    world.act("batch.delivered", buyer, second, site=site_1, quantity=9)
    world.submit(
        world.make("party.listed", "bis", party=other, list="unverified", reason="Unchecked."),
        world.keys("bis"),
    )
    # one batch request: a registration, a delisting and four custody events, one of them a
    # split chained (`prev`) to a fabrication earlier in the same request
    party, registration, registration_signers = world.party_event("buyer", "AE")
    third, fourth = world.name("B"), world.name("B")
    fourth_children = [world.name(f"{fourth}.c"), world.name(f"{fourth}.c")]
    items: list[tuple[JSONObject, list[Signer]]] = [(registration, registration_signers)]
    custody: list[tuple[str, str, str, JSONObject]] = [
        ("batch.fabricated", vendor, third, {"model": "H200", "quantity": 8, "country": "TW"}),
        ("batch.fabricated", vendor, fourth, {"model": "H200", "quantity": 4, "country": "TW"}),
        ("batch.installed", buyer, second, {"site": site_1}),
        ("batch.split", vendor, fourth,
         {"into": [{"batch": child, "quantity": 2} for child in fourth_children]}),
    ]  # fmt: skip
    for type_, actor, batch_id, fields in custody:
        event = world.batch_event(type_, actor, batch_id, **fields)
        world.moved(event, sign(event, world.keys(actor)))  # Ed25519 signing is deterministic
        items.append((event, world.keys(actor)))
    delisted = world.make("party.delisted", "bis", party=other, list="unverified")
    items.insert(3, (delisted, world.keys("bis")))
    world.submit_batch(items)
    # and a few more after the batch, so it is both an older and a newer checkpoint
    world.act("batch.exported", vendor, third, to=party, destination="AE")
    world.site(party)
    world.act("batch.decommissioned", vendor, fourth_children[0], reason="Test wafer.")
    world.act("batch.reported_lost", vendor, third, reason="Lost at sea.")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogWorld]:
    built = start_world(tmp_path_factory.mktemp("independent-log"), ORIGIN)
    try:
        populate(built)
        yield built
    finally:
        built.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LogWorld]:
    """A ledger of its own with nothing in it, default origin: for an empty log and restarts."""
    built = start_world(tmp_path, None)
    try:
        yield built
    finally:
        built.close()


def hashes_of(body: JSONObject) -> list[bytes]:
    hashes = body["hashes"]
    assert isinstance(hashes, list), body
    for h in hashes:
        assert isinstance(h, str), body
        assert re.fullmatch(r"[0-9a-f]{64}", h), body
    return [bytes.fromhex(h) for h in hashes]


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index % len(out)] ^= 0x01
    return bytes(out)


def noted(note: str) -> tuple[str, list[str]]:
    """The text of a signed note and its signature lines (shape only, no verification)."""
    text, _, signatures = note.rpartition("\n\n")
    return text + "\n", signatures.rstrip("\n").split("\n")


# --- what each write left in the log -------------------------------------------------------


def test_a_few_dozen_envelopes_were_accepted_with_dense_seqs_and_one_batch_among_them(
    world: LogWorld,
) -> None:
    receipts = [r for o in world.observed for r in o.receipts]
    assert len(world.sent) >= 30
    assert [r["seq"] for r in receipts] == list(range(len(world.sent)))
    assert world.size() == len(world.sent)
    assert len(world.observed[world.batch_index].receipts) == 6


def test_each_receipts_leaf_hash_is_sha256_of_zero_then_the_canonical_envelope(
    world: LogWorld,
) -> None:
    receipts = [r for o in world.observed for r in o.receipts]
    for seq, (receipt, envelope) in enumerate(zip(receipts, world.sent, strict=True)):
        expected = hashlib.sha256(b"\x00" + canonical(envelope)).hexdigest()
        assert receipt["leaf_hash"] == expected, seq
        assert leaf_hash(world.leaves[seq]).hex() == expected, seq


def test_the_log_serves_every_envelope_exactly_as_accepted_and_never_changes_an_entry(
    world: LogWorld,
) -> None:
    assert world.leaves == [canonical(envelope) for envelope in world.sent]
    for observed in world.observed:
        assert observed.entries == world.leaves[: len(observed.entries)]


def test_the_served_log_key_is_the_one_in_the_key_file_init_wrote(world: LogWorld) -> None:
    for observed in world.observed:
        assert observed.key.strip() == world.vkey
    response = world.client.get("/v1/log/key")
    assert response.headers["content-type"].startswith("text/plain")
    assert world.client.ledger()["log_key"] == world.vkey
    assert world.client.ledger()["origin"] == ORIGIN


def test_each_checkpoint_served_right_after_acceptance_verifies_under_both_keys(
    world: LogWorld,
) -> None:
    for observed in world.observed:
        assert observed.note_type.startswith("text/plain"), observed.note_type
        mine = open_checkpoint(observed.note, world.vkey, ORIGIN)
        served = open_checkpoint(observed.note, observed.key.strip(), ORIGIN)
        assert mine == served
        assert mine.origin == ORIGIN


def test_each_checkpoint_covers_exactly_the_envelopes_accepted_so_far(world: LogWorld) -> None:
    for observed in world.observed:
        checkpoint = world.opened(observed)
        last = max(int(r["seq"]) for r in observed.receipts)
        assert checkpoint.size == last + 1, (checkpoint.size, last)
        assert len(observed.entries) == checkpoint.size


def test_each_checkpoint_root_is_the_rfc6962_root_of_the_entries_served_then(
    world: LogWorld,
) -> None:
    for observed in world.observed:
        checkpoint = world.opened(observed)
        assert checkpoint.root == root_of(observed.entries[: checkpoint.size]), checkpoint.size


def test_each_checkpoint_is_origin_size_root_and_one_signature_by_the_origin(
    world: LogWorld,
) -> None:
    for observed in world.observed:
        checkpoint = world.opened(observed)
        text, signatures = noted(observed.note)
        root = base64.b64encode(checkpoint.root).decode()
        assert text == f"{ORIGIN}\n{checkpoint.size}\n{root}\n"
        assert len(signatures) == 1, signatures
        assert signatures[0].startswith(f"\u2014 {ORIGIN} "), signatures


def test_the_batch_request_is_covered_whole_by_the_checkpoint_after_it(world: LogWorld) -> None:
    before = world.opened(world.observed[world.batch_index - 1])
    observed = world.observed[world.batch_index]
    after = world.opened(observed)
    seqs = [int(r["seq"]) for r in observed.receipts]
    assert seqs == list(range(before.size, before.size + 6))
    assert after.size == before.size + 6
    for receipt in observed.receipts:
        seq = int(receipt["seq"])
        assert receipt["leaf_hash"] == leaf_hash(world.leaves[seq]).hex()
        body = world.inclusion(seq, after.size)
        proof = hashes_of(body)
        assert verify_inclusion(leaf_hash(world.leaves[seq]), seq, after.size, proof, after.root)
    proof = hashes_of(world.consistency(before.size, after.size))
    assert verify_consistency(before.size, after.size, proof, before.root, after.root)


def test_without_a_write_the_checkpoint_is_byte_identical(world: LogWorld) -> None:
    notes = {world.checkpoint_note() for _ in range(3)}
    assert notes == {world.observed[-1].note}


# --- proofs against every kept checkpoint --------------------------------------------------


def test_every_inclusion_proof_at_every_kept_size_verifies_and_is_the_rfc_path(
    world: LogWorld,
) -> None:
    leaves = world.leaves
    for checkpoint in world.checkpoints:
        size, tree = checkpoint.size, leaves[: checkpoint.size]
        for seq in range(size):
            body = world.inclusion(seq, size)
            assert (body["seq"], body["size"]) == (seq, size), body
            assert body["leaf_hash"] == leaf_hash(tree[seq]).hex(), (seq, size)
            proof = hashes_of(body)
            assert verify_inclusion(leaf_hash(tree[seq]), seq, size, proof, checkpoint.root), (
                f"inclusion of {seq} in {size} does not verify"
            )
            assert proof == inclusion_proof_of(tree, seq), (seq, size)


def test_an_inclusion_proof_without_a_size_is_at_the_latest_checkpoints_size(
    world: LogWorld,
) -> None:
    latest = parse_checkpoint(verify_signed_note(world.checkpoint_note(), world.vkey))
    for seq in (0, latest.size // 2, latest.size - 1):
        body = world.inclusion(seq)
        assert body == world.inclusion(seq, latest.size)
        assert verify_inclusion(
            leaf_hash(world.leaves[seq]), seq, latest.size, hashes_of(body), latest.root
        )


def test_every_pair_of_kept_checkpoints_is_proved_consistent_by_the_rfc_proof(
    world: LogWorld,
) -> None:
    leaves, checkpoints = world.leaves, world.checkpoints
    for old, new in itertools.combinations_with_replacement(checkpoints, 2):
        body = world.consistency(old.size, new.size)
        assert (body["from"], body["to"]) == (old.size, new.size), body
        proof = hashes_of(body)
        assert verify_consistency(old.size, new.size, proof, old.root, new.root), (
            f"{old.size} -> {new.size} not proved consistent"
        )
        assert proof == consistency_proof_of(leaves[: new.size], old.size), (old.size, new.size)


# --- refusals ------------------------------------------------------------------------------

BAD_REQUEST = {(400, "bad_request")}
NOT_FOUND = {(404, "not_found")}
EITHER = BAD_REQUEST | NOT_FOUND  # where section 6 reads both ways (a bad parameter, no such seq)

# (name, path and query for the latest size n, the answers section 6 allows)
REFUSALS: list[tuple[str, Callable[[int], str], set[tuple[int, str]]]] = [
    ("inclusion seq equal to size", lambda n: f"/v1/log/inclusion?seq={n // 2}&size={n // 2}",
     NOT_FOUND),
    ("inclusion seq past the latest", lambda n: f"/v1/log/inclusion?seq={n}", NOT_FOUND),
    ("inclusion seq equal to latest size", lambda n: f"/v1/log/inclusion?seq={n}&size={n}",
     NOT_FOUND),
    ("inclusion size past the latest", lambda n: f"/v1/log/inclusion?seq=0&size={n + 1}",
     NOT_FOUND),
    ("inclusion size far past the latest", lambda n: f"/v1/log/inclusion?seq=0&size={n * 1000}",
     NOT_FOUND),
    ("inclusion seq negative", lambda n: f"/v1/log/inclusion?seq=-1&size={n}", EITHER),
    ("inclusion seq missing", lambda n: f"/v1/log/inclusion?size={n}", BAD_REQUEST),
    ("inclusion seq not a number", lambda n: f"/v1/log/inclusion?seq=one&size={n}", BAD_REQUEST),
    ("inclusion size zero", lambda n: "/v1/log/inclusion?seq=0&size=0", EITHER),
    ("consistency from zero", lambda n: f"/v1/log/consistency?from=0&to={n}", BAD_REQUEST),
    ("consistency from after to", lambda n: f"/v1/log/consistency?from={n}&to={n - 1}",
     BAD_REQUEST),
    ("consistency to past the latest", lambda n: f"/v1/log/consistency?from=1&to={n + 1}",
     EITHER),
    ("consistency from and to past the latest",
     lambda n: f"/v1/log/consistency?from={n + 1}&to={n + 2}", EITHER),
    ("consistency to missing", lambda n: "/v1/log/consistency?from=1", BAD_REQUEST),
    ("consistency from negative", lambda n: f"/v1/log/consistency?from=-1&to={n}", BAD_REQUEST),
]  # fmt: skip


def assert_error(response: httpx.Response, allowed: set[tuple[int, str]]) -> None:
    assert 400 <= response.status_code < 500, f"{response.status_code} {response.text}"
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message"}, body
    assert (response.status_code, error["code"]) in allowed, response.text
    message = error["message"]
    assert isinstance(message, str), body
    assert " " in message.strip(), f"not a sentence for a person: {message!r}"


@pytest.mark.parametrize(
    ("path", "allowed"), [(p, a) for _, p, a in REFUSALS], ids=[k for k, _, _ in REFUSALS]
)
def test_an_out_of_range_proof_request_is_a_4xx_error_body_and_changes_nothing(
    world: LogWorld, path: Callable[[int], str], allowed: set[tuple[int, str]]
) -> None:
    note, size = world.checkpoint_note(), world.size()
    latest = open_checkpoint(note, world.vkey, ORIGIN).size
    assert latest == size
    assert_error(world.client.get(path(latest)), allowed)
    assert world.size() == size
    assert world.checkpoint_note() == note


# --- the checks are not vacuous ------------------------------------------------------------


def test_a_flipped_proof_hash_root_or_the_wrong_leaf_fails_inclusion(world: LogWorld) -> None:
    latest = world.checkpoints[-1]
    seq = latest.size // 3
    leaf = leaf_hash(world.leaves[seq])
    proof = hashes_of(world.inclusion(seq, latest.size))
    assert len(proof) >= 4
    assert verify_inclusion(leaf, seq, latest.size, proof, latest.root)
    for j in range(len(proof)):
        for byte in (0, 17, 31):
            tampered = [flip(h, byte) if k == j else h for k, h in enumerate(proof)]
            assert not verify_inclusion(leaf, seq, latest.size, tampered, latest.root), (j, byte)
    for byte in range(32):
        assert not verify_inclusion(leaf, seq, latest.size, proof, flip(latest.root, byte))
        assert not verify_inclusion(flip(leaf, byte), seq, latest.size, proof, latest.root)
    for other in (0, seq - 1, seq + 1, latest.size - 1):
        wrong = leaf_hash(world.leaves[other])
        assert not verify_inclusion(wrong, seq, latest.size, proof, latest.root), other
    assert not verify_inclusion(leaf, seq + 1, latest.size, proof, latest.root)
    older = world.checkpoints[len(world.checkpoints) // 2]
    assert not verify_inclusion(leaf, seq, latest.size, proof, older.root)


def test_a_flipped_proof_hash_or_root_fails_consistency(world: LogWorld) -> None:
    checkpoints = world.checkpoints
    old, new = checkpoints[6], checkpoints[-1]
    proof = hashes_of(world.consistency(old.size, new.size))
    assert len(proof) >= 3
    assert verify_consistency(old.size, new.size, proof, old.root, new.root)
    for j in range(len(proof)):
        for byte in (0, 17, 31):
            tampered = [flip(h, byte) if k == j else h for k, h in enumerate(proof)]
            assert not verify_consistency(old.size, new.size, tampered, old.root, new.root)
    for byte in range(32):
        assert not verify_consistency(old.size, new.size, proof, flip(old.root, byte), new.root)
        assert not verify_consistency(old.size, new.size, proof, old.root, flip(new.root, byte))
    neighbour = checkpoints[7]
    assert not verify_consistency(old.size, new.size, proof, neighbour.root, new.root)
    assert not verify_consistency(old.size + 1, new.size, proof, old.root, new.root)


def test_a_checkpoint_with_a_flipped_root_or_size_or_under_another_key_is_refused(
    world: LogWorld,
) -> None:
    note = world.observed[-1].note
    checkpoint = open_checkpoint(note, world.vkey, ORIGIN)
    root = base64.b64encode(checkpoint.root).decode()
    for byte in (0, 15, 31):
        forged_root = base64.b64encode(flip(checkpoint.root, byte)).decode()
        with pytest.raises(ValueError, match="does not verify"):
            open_checkpoint(note.replace(root, forged_root, 1), world.vkey, ORIGIN)
    bigger = note.replace(f"\n{checkpoint.size}\n", f"\n{checkpoint.size + 1}\n", 1)
    with pytest.raises(ValueError, match="does not verify"):
        open_checkpoint(bigger, world.vkey, ORIGIN)
    stranger = vkey_for(ORIGIN, Signer.from_label("not the log key").public_key)
    with pytest.raises(ValueError, match="no signature"):
        open_checkpoint(note, stranger, ORIGIN)
    with pytest.raises(ValueError, match="no signature"):  # the name is part of the key
        open_checkpoint(note, vkey_for(DEFAULT_ORIGIN, parse_vkey(world.vkey).public_key), ORIGIN)


# --- a clean log of its own ----------------------------------------------------------------


def test_an_empty_log_proves_nothing_then_genesis_is_a_tree_of_one(fresh: LogWorld) -> None:
    response = fresh.client.get("/v1/log/checkpoint")
    if response.status_code == 200:  # section 8 is silent on the empty log: size 0, or none
        empty = open_checkpoint(response.text, fresh.vkey, DEFAULT_ORIGIN)
        assert empty == Checkpoint(DEFAULT_ORIGIN, 0, hashlib.sha256(b"").digest())
    else:
        assert_error(response, NOT_FOUND)
    assert_error(fresh.client.get("/v1/log/inclusion?seq=0"), NOT_FOUND)
    assert_error(fresh.client.get("/v1/log/inclusion?seq=0&size=1"), NOT_FOUND)
    assert_error(fresh.client.get("/v1/log/consistency?from=1&to=1"), EITHER)
    assert fresh.size() == 0

    fresh.genesis(fresh.signers["bis"])
    observed = fresh.observed[-1]
    genesis = canonical(fresh.sent[0])
    checkpoint = open_checkpoint(observed.note, fresh.vkey, DEFAULT_ORIGIN)
    assert checkpoint == Checkpoint(DEFAULT_ORIGIN, 1, leaf_hash(genesis))
    assert observed.receipts[0]["seq"] == 0
    assert observed.receipts[0]["leaf_hash"] == leaf_hash(genesis).hex()
    assert fresh.inclusion(0) == {
        "seq": 0,
        "size": 1,
        "leaf_hash": leaf_hash(genesis).hex(),
        "hashes": [],
    }
    assert fresh.consistency(1, 1) == {"from": 1, "to": 1, "hashes": []}
    assert_error(fresh.client.get("/v1/log/inclusion?seq=1"), NOT_FOUND)


def test_refused_envelopes_leave_the_checkpoint_alone_and_checkpoints_survive_a_restart(
    fresh: LogWorld,
) -> None:
    fresh.genesis(fresh.signers["bis"])
    vendor = fresh.party("vendor", "US")
    fresh.party("buyer", "AE")
    before = fresh.checkpoint_note()
    # refused: signed by a key no party holds (401), and made for another ledger (422)
    stranger = Signer.from_label("nobody registered this key")
    site = {"id": "nowhere", "operator": vendor, "country": "US", "name": "Nowhere"}
    forged = fresh.client.post_event(
        sign(fresh.make("site.registered", vendor, site=site), [stranger])
    )
    assert forged.status_code == 401, forged.text
    elsewhere = make_event("site.registered", vendor, origin="elsewhere.example/ledger", site=site)
    refused = fresh.client.post_event(sign(elsewhere, fresh.keys(vendor)))
    assert refused.status_code == 422, refused.text
    assert fresh.checkpoint_note() == before
    assert fresh.size() == 3

    kept = [open_checkpoint(o.note, fresh.vkey, DEFAULT_ORIGIN) for o in fresh.observed]
    proofs = {seq: fresh.inclusion(seq, 2) for seq in range(2)}
    fresh.server.restart()
    fresh.client.close()
    fresh.client = LedgerClient(fresh.server.url)
    assert fresh.checkpoint_note() == before
    assert {seq: fresh.inclusion(seq, 2) for seq in range(2)} == proofs
    fresh.site(vendor, "US")
    after = open_checkpoint(fresh.observed[-1].note, fresh.vkey, DEFAULT_ORIGIN)
    assert after.size == 4
    leaves = fresh.entries()
    assert after.root == root_of(leaves)
    for old in kept:
        proof = hashes_of(fresh.consistency(old.size, after.size))
        assert verify_consistency(old.size, after.size, proof, old.root, after.root), old.size
