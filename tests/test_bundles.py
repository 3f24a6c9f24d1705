"""Evidence bundles (PROTOCOL.md section 9): made by `GET /v1/bundles/batches/{id}` and
`chipledger export-bundle`, checked offline by `chipledger verify` (sections 9 and 10).

The story: an authority adopts a rule pack and grants a license, a buyer registers a site, the
authority adds a second key to gulf-cloud and later revokes its first; nvidia fabricates
H200-1 and exports it under the license, gulf-cloud receives it signing with the new key,
splits it, and transfers one part to desert-ai with both their signatures. A bundle of it
verifies, on SQLite and PostgreSQL; then each tampering in the table fails, and the report
names exactly what it broke and nothing else.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import create_app
from ledger.application import Ledger
from ledger.canonical import canonical
from ledger.crypto import Signer
from ledger.notes import head_text, open_note, parse_head, sign_note, verifier_key
from ledger.signing import write_secret
from ledger.verify import Report, verify_bundle
from tests.support import LOG_SEED, ORIGIN, Clock, World, new_ledger, populate, signer
from tests.test_rules import Office, accepted
from tools.cli import main

Json = dict[str, Any]
VKEY = verifier_key(ORIGIN, Signer(LOG_SEED).public_key)
NEW_KEY = signer("gulf-cloud#2")
# Entries of tests.support.populate: genesis (bis), nvidia, gulf-cloud, desert-ai, fastfreight,
# audit-office, then sites dxb-1 (gulf-cloud) and tsmc-f18 (nvidia).
POPULATED = {"genesis": 0, "nvidia": 1, "gulf-cloud": 2, "desert-ai": 3, "dxb-1": 6}
LINEAGE = ["H200-1", "H200-1-a", "H200-1-b"]


@dataclass
class Story:
    ledger: Ledger
    seqs: dict[str, int]
    envelopes: dict[str, Json]

    def needed(self) -> list[int]:
        """The seqs a bundle of H200-1 must hold: not fastfreight, audit-office, tsmc-f18
        or the other batch, which nothing in H200-1's lineage depends on."""
        names = [*POPULATED, "pack", "auh-1", "key", "license", "fabricated", "exported"]
        names += ["delivered", "revoked", "split", "transferred"]
        return sorted(self.seqs[name] for name in names)


def tell(office: Office, ledger: Ledger) -> Story:
    world = office.world
    seqs, envelopes = dict(POPULATED), {}

    def sent(name: str, receipt: Json, envelope: Json | None = None) -> None:
        seqs[name] = receipt["seq"]
        envelopes[name] = envelope or {}

    def authority(name: str, kind: str, *cosigners: str, **fields: Any) -> None:
        envelope = world.envelope(world.event(kind, "bis", **fields), "bis", *cosigners)
        sent(name, office.accept(envelope))

    def record(name: str, kind: str, actor: str, *keys: str, **fields: Any) -> None:
        done = office.record(kind, actor, keys=keys, **fields)
        sent(name, done.receipt, done.envelope)

    sent("pack", accepted(office.adopt("pack-2")))
    sent("auh-1", office.accept(world.site("auh-1", "desert-ai", "AE")))
    new_key = NEW_KEY.public_key_b64
    authority("key", "party.key_added", "gulf-cloud#2", party="gulf-cloud", key=new_key)
    sent("license", accepted(office.grant("L-ae")))
    sent("other", office.fabricate("H200-9"))
    sent("fabricated", office.fabricate("H200-1"))
    sent("exported", office.export("H200-1", license="L-ae"))
    record("delivered", "batch.delivered", "gulf-cloud", "gulf-cloud#2", batch="H200-1",
           site="dxb-1", quantity=100)  # fmt: skip
    authority("revoked", "party.key_revoked", party="gulf-cloud", keyid=signer("gulf-cloud").key_id)
    parts = [{"batch": "H200-1-a", "quantity": 60}, {"batch": "H200-1-b", "quantity": 40}]
    record("split", "batch.split", "gulf-cloud", "gulf-cloud#2", batch="H200-1", into=parts)
    record("transferred", "batch.transferred", "gulf-cloud", "gulf-cloud#2", "desert-ai",
           batch="H200-1-a", to="desert-ai", site="auh-1")  # fmt: skip
    export = office.sign("batch.exported", "nvidia", batch="H200-9", to="gulf-cloud",
                         destination="AE")[1]  # fmt: skip
    sent("other-exported", office.accept(export), export)
    return Story(ledger, seqs, envelopes)


@pytest.fixture
def story(client: TestClient, world: World, populated: Ledger) -> Story:
    return tell(Office(client, world), populated)


@pytest.fixture
def bundle(client: TestClient, story: Story) -> Json:
    response = client.get("/v1/bundles/batches/H200-1")
    assert response.status_code == 200, response.text
    found: Json = response.json()
    return found


def failures(report: Report) -> list[tuple[str, str]]:
    return [(check.what, check.detail) for check in report.checks if not check.ok]


def head_of(note: str) -> tuple[str, int, int]:
    head = parse_head(open_note(note, VKEY))
    return head.batch, head.seq, head.tree_size


# -- what a bundle holds ---------------------------------------------------------------------


def test_a_bundle_holds_the_lineage_what_it_depends_on_and_a_signed_head_per_batch(
    bundle: Json, story: Story
) -> None:
    size = story.ledger.ledger_info().size
    assert bundle["type"] == "bundle"
    assert bundle["version"] == 1
    assert bundle["origin"] == ORIGIN
    assert bundle["batch"] == "H200-1"
    assert bundle["lineage"] == LINEAGE
    assert bundle["checkpoint"] == story.ledger.checkpoint()
    assert [entry["seq"] for entry in bundle["entries"]] == story.needed()
    listed = ",".join(f"{entry['seq']}@{entry['recorded_at']}" for entry in bundle["entries"])
    assert open_note(bundle["manifest"], VKEY) == (
        f"chipledger-bundle/v1\n{ORIGIN}\nH200-1\n{size}\n{listed}\n"
    )
    split, transferred = story.seqs["split"], story.seqs["transferred"]
    assert [head_of(note) for note in bundle["heads"]] == [
        ("H200-1", split, size),
        ("H200-1-a", transferred, size),
        ("H200-1-b", split, size),  # a child with no event of its own: the split is its head
    ]
    for entry in bundle["entries"]:
        proof = story.ledger.inclusion(entry["seq"]).hashes
        assert entry["proof"] == proof
        assert entry["envelope"] == story.ledger.log_entries(entry["seq"], 1).entries[0].envelope


def test_a_bundle_verifies_and_says_where_each_batch_of_the_lineage_ended(bundle: Json) -> None:
    report = verify_bundle(json.dumps(bundle).encode(), VKEY)
    assert failures(report) == []
    assert report.ok
    assert [check.what for check in report.checks] == [
        "bundle", "checkpoint", "entries", "manifest", "inclusion proofs", "signatures",
        "prev links", "head statements", "replay", "lineage",
    ]  # fmt: skip
    assert [state.sentence() for state in report.batches] == [
        "H200-1: split, 100 chips (0 missing), owned by gulf-cloud, held by gulf-cloud; "
        "its latest entry is seq 17",
        "H200-1-a: delivered at site auh-1 (AE), 60 chips (0 missing), owned by desert-ai, "
        "held by desert-ai; its latest entry is seq 18",
        "H200-1-b: delivered at site dxb-1 (AE), 40 chips (0 missing), owned by gulf-cloud, "
        "held by gulf-cloud; its latest entry is seq 17",
    ]
    assert report.summary().startswith("The bundle verifies: batch H200-1's custody")


def test_a_bundle_of_a_split_child_holds_its_ancestors_and_not_its_sibling(
    client: TestClient, story: Story
) -> None:
    bundle = client.get("/v1/bundles/batches/H200-1-a").json()
    assert bundle["lineage"] == ["H200-1", "H200-1-a"]
    assert [head_of(note)[0] for note in bundle["heads"]] == ["H200-1", "H200-1-a"]
    assert verify_bundle(bundle, VKEY).ok


def test_a_bundle_of_an_unknown_batch_is_404(client: TestClient, story: Story) -> None:
    response = client.get("/v1/bundles/batches/H200-404")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "no batch 'H200-404'" in response.json()["error"]["message"]


def test_a_ledger_without_its_log_key_says_it_cannot_sign_head_statements(
    store: str, clock: Clock, story: Story
) -> None:
    keyless = Ledger(store, clock=clock)
    try:
        response = TestClient(create_app(keyless, open_reads=True)).get(
            "/v1/bundles/batches/H200-1"
        )
    finally:
        keyless.close()
    assert response.status_code == 404
    assert "holds no log key" in response.json()["error"]["message"]


def test_a_bundle_of_a_batch_made_on_either_store_verifies(any_store: str) -> None:
    clock = Clock()
    world = World(clock)
    ledger = new_ledger(any_store, clock)
    try:
        populate(ledger, world)
        story = tell(Office(TestClient(create_app(ledger, open_reads=True)), world), ledger)
        bundle = ledger.bundle("H200-1").model_dump(mode="json")
        report = verify_bundle(json.dumps(bundle).encode(), VKEY)
    finally:
        ledger.close()
    assert failures(report) == []
    assert [entry["seq"] for entry in bundle["entries"]] == story.needed()


# -- the command line ------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def log_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "log.key"
    write_secret(path, Signer(LOG_SEED))
    return path


def test_export_bundle_writes_what_the_api_answers_and_verify_accepts_it(
    capsys: pytest.CaptureFixture[str], store: str, log_key_file: Path, tmp_path: Path,
    bundle: Json,
) -> None:  # fmt: skip
    out = tmp_path / "H200-1.bundle.json"
    code, said, _ = run(capsys, "export-bundle", "H200-1", "--store", store,
                        "--log-key", str(log_key_file), "--out", str(out))  # fmt: skip
    assert code == 0
    assert "wrote the bundle of H200-1" in said
    assert json.loads(out.read_text()) == bundle
    code, said, err = run(capsys, "verify", str(out), "--log-key", VKEY)
    assert (code, err) == (0, "")
    lines = said.splitlines()
    assert lines[0] == "ok    bundle: a bundle of batch H200-1 from chipledger.local/ledger"
    assert all(line.startswith(("ok    ", "      ")) for line in lines[:-1])
    assert "      H200-1-a: delivered at site auh-1 (AE)" in said
    assert lines[-1].startswith("The bundle verifies")


def test_export_bundle_to_standard_output_and_verify_with_a_key_file(
    capsys: pytest.CaptureFixture[str], store: str, log_key_file: Path, tmp_path: Path,
    story: Story,
) -> None:  # fmt: skip
    code, said, _ = run(capsys, "export-bundle", "H200-1-b", "--store", store,
                        "--log-key", str(log_key_file))  # fmt: skip
    assert code == 0
    (tmp_path / "b.json").write_text(said)
    (tmp_path / "log.vkey").write_text(VKEY + "\n")
    code, said, _ = run(capsys, "verify", str(tmp_path / "b.json"),
                        "--log-key", str(tmp_path / "log.vkey"))  # fmt: skip
    assert code == 0, said


def test_verify_exits_1_and_names_the_broken_signature(
    capsys: pytest.CaptureFixture[str], bundle: Json, story: Story, tmp_path: Path
) -> None:
    seq = story.seqs["delivered"]
    edit_payload(entry(bundle, seq), b'"quantity":100', b'"quantity":900')
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(bundle))
    code, said, _ = run(capsys, "verify", str(path), "--log-key", VKEY)
    assert code == 1
    wanted = f"FAIL  signatures: seq {seq}: the signature by key {NEW_KEY.key_id} does not verify"
    assert wanted in said.splitlines()
    assert said.splitlines()[-1].startswith("The bundle does NOT verify")


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        pytest.param(["verify", "{bundle}", "--log-key", "not-a-key"], 2, "--log-key",
                     id="malformed-log-key-is-usage"),
        pytest.param(["verify", "{tmp}/none.json", "--log-key", VKEY], 1, "no file at",
                     id="missing-bundle-file"),
        pytest.param(["verify", "{bundle}"], 2, "--log-key", id="no-log-key-is-usage"),
        pytest.param(["export-bundle", "H200-404", "--store", "{store}", "--log-key", "{key}"],
                     1, "no batch 'H200-404'", id="export-of-an-unknown-batch"),
        pytest.param(["export-bundle", "H200-1", "--store", "{store}", "--log-key", "{other}"],
                     1, "not this ledger's", id="export-with-another-log-key"),
    ],
)  # fmt: skip
def test_bundle_commands_refuse_with_one_sentence_and_the_documented_exit_code(
    capsys: pytest.CaptureFixture[str], bundle: Json, store: str, log_key_file: Path,
    tmp_path: Path, argv: list[str], code: int, said: str,
) -> None:  # fmt: skip
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    write_secret(tmp_path / "other.key", signer("not-the-log"))
    values = {"bundle": str(tmp_path / "bundle.json"), "tmp": str(tmp_path), "store": store,
              "key": str(log_key_file), "other": str(tmp_path / "other.key")}  # fmt: skip
    found, _, err = run(capsys, *(arg.format(**values) for arg in argv))
    assert found == code
    assert said in err


# -- every tampering fails, named --------------------------------------------------------------


def entry(bundle: Json, seq: int) -> Json:
    found: list[Json] = [e for e in bundle["entries"] if e["seq"] == seq]
    assert len(found) == 1
    return found[0]


def edit_payload(item: Json, old: bytes, new: bytes) -> None:
    payload = base64.b64decode(item["envelope"]["payload"])
    assert payload.count(old) == 1
    assert len(old) == len(new)
    item["envelope"]["payload"] = base64.b64encode(payload.replace(old, new)).decode()


def flip(text: str, at: int) -> str:
    """Standard base64 `text` with one bit of byte `at` flipped."""
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def drop(bundle: Json, seq: int) -> tuple[str, str]:
    """Leave entry `seq` out; the manifest's complaint about that."""
    bundle["entries"].remove(entry(bundle, seq))
    return ("manifest", f"it lists seq {seq}, which the bundle omits")


def note_line(note: str, number: int, value: str) -> str:
    lines = note.split("\n")
    lines[number] = value
    return "\n".join(lines)


Tampering = Callable[[Json, Story], list[tuple[str, str]]]


def payload_byte(bundle: Json, story: Story) -> list[tuple[str, str]]:
    seq = story.seqs["delivered"]
    edit_payload(entry(bundle, seq), b'"quantity":100', b'"quantity":900')
    return [
        ("inclusion proofs", f"seq {seq}: its inclusion proof does not lead from its leaf"),
        ("signatures", f"seq {seq}: the signature by key {NEW_KEY.key_id} does not verify"),
        ("replay", f"seq {seq} (batch.delivered) is refused: the signature by key "
                   f"{NEW_KEY.key_id} does not verify"),
        ("prev links", f"seq {story.seqs['split']} (batch.split of H200-1): its prev "),
    ]  # fmt: skip


def cosignature_byte(bundle: Json, story: Story) -> list[tuple[str, str]]:
    seq, receiver = story.seqs["transferred"], signer("desert-ai").key_id
    (signature,) = [
        s for s in entry(bundle, seq)["envelope"]["signatures"] if s["keyid"] == receiver
    ]
    signature["sig"] = flip(signature["sig"], 10)
    return [
        ("inclusion proofs", f"seq {seq}: its inclusion proof"),  # the signature is in the leaf
        ("signatures", f"seq {seq}: the signature by key {receiver} does not verify"),
        ("replay", f"seq {seq} (batch.transferred) is refused: the signature by key {receiver}"),
        ("head statements", f"(batch H200-1-a): seq {seq} in the bundle is not the entry"),
    ]


def proof_hash(bundle: Json, story: Story) -> list[tuple[str, str]]:
    seq = story.seqs["exported"]
    proof = entry(bundle, seq)["proof"]
    proof[1] = ("0" if proof[1][0] != "0" else "1") + proof[1][1:]
    return [("inclusion proofs", f"seq {seq}: its inclusion proof does not lead")]


def checkpoint_root(bundle: Json, story: Story) -> list[tuple[str, str]]:
    bundle["checkpoint"] = note_line(bundle["checkpoint"], 2, base64.b64encode(bytes(32)).decode())
    return [("checkpoint", "it does not open under the log key"),
            ("inclusion proofs", "not checked")]  # fmt: skip


def checkpoint_size(bundle: Json, story: Story) -> list[tuple[str, str]]:
    size = int(bundle["checkpoint"].split("\n")[1])
    bundle["checkpoint"] = note_line(bundle["checkpoint"], 1, str(size + 1))
    return [("checkpoint", "bad signature"), ("inclusion proofs", "not checked")]


def checkpoint_signature(bundle: Json, story: Story) -> list[tuple[str, str]]:
    name, _, signature = bundle["checkpoint"].split("\n")[-2].rpartition(" ")
    bundle["checkpoint"] = note_line(bundle["checkpoint"], -2, f"{name} {flip(signature, 20)}")
    return [("checkpoint", "bad signature"), ("inclusion proofs", "not checked")]


def an_older_checkpoint(bundle: Json, story: Story) -> list[tuple[str, str]]:
    """A genuine checkpoint, signed before the transfer was accepted."""
    transferred = story.seqs["transferred"]
    (older,) = [note for size, note in story.ledger.checkpoints() if size == transferred]
    bundle["checkpoint"] = older
    return [
        ("entries", f"seq {transferred} is past the checkpoint's tree (size {transferred})"),
        ("inclusion proofs", "seq 0: its inclusion proof does not lead"),
        ("head statements", f"it is as of tree size {transferred + 2}, the checkpoint of size "
                            f"{transferred}"),
        ("manifest", f"it is as of tree size {transferred + 2}, the checkpoint of size "
                     f"{transferred}"),
    ]  # fmt: skip


def head_seq(bundle: Json, story: Story) -> list[tuple[str, str]]:
    bundle["heads"][1] = note_line(bundle["heads"][1], 3, str(story.seqs["split"]))
    return [
        ("head statements", "head statement 2 does not open: bad signature"),
        ("head statements", "batch H200-1-a of the lineage has no head statement"),
    ]


def head_by_another_key(bundle: Json, story: Story) -> list[tuple[str, str]]:
    """A head statement saying H200-1-a ends at the split, signed by a key not the log's."""
    split = entry(bundle, story.seqs["split"])
    split_hash = hashlib.sha256(canonical(split["envelope"])).hexdigest()
    text = head_text(ORIGIN, "H200-1-a", split["seq"], split_hash, story.seqs["transferred"] + 2)
    bundle["heads"][1] = sign_note(text, ORIGIN, signer("not-the-log"))
    return [
        ("head statements", "head statement 2 does not open: no signature by the key"),
        ("head statements", "batch H200-1-a of the lineage has no head statement"),
    ]


def the_batch_last_entry(bundle: Json, story: Story) -> list[tuple[str, str]]:
    seq = story.seqs["transferred"]
    return [
        drop(bundle, seq),
        ("head statements", f"head statement 2 (batch H200-1-a): it names seq {seq} as the "
                            "batch's latest entry, which the bundle omits"),
        ("lineage", f"batch H200-1-a: its replay ends at seq {story.seqs['split']}, not at "
                    f"seq {seq} that its head statement names"),
    ]  # fmt: skip


def a_middle_entry(bundle: Json, story: Story) -> list[tuple[str, str]]:
    delivered = story.seqs["delivered"]
    return [
        drop(bundle, story.seqs["exported"]),
        ("prev links", f"seq {delivered} (batch.delivered of H200-1): its prev "),
        ("prev links", "is the envelope_hash of no entry in the bundle: the entry before it is "
                       "missing"),
        ("replay", f"seq {delivered} (batch.delivered) is refused"),
    ]  # fmt: skip


def the_key_registration(bundle: Json, story: Story) -> list[tuple[str, str]]:
    unknown = f"key {NEW_KEY.key_id} signs it, but no entry of the bundle registers that key"
    return [
        drop(bundle, story.seqs["key"]),
        *(("signatures", f"seq {story.seqs[name]}: {unknown}")
          for name in ("delivered", "split", "transferred")),
        ("replay", f"seq {story.seqs['delivered']} (batch.delivered) is refused: key "
                   f"{NEW_KEY.key_id} is not a registered, unrevoked key"),
    ]  # fmt: skip


def the_site_registration(bundle: Json, story: Story) -> list[tuple[str, str]]:
    return [
        drop(bundle, story.seqs["auh-1"]),
        ("replay", f"seq {story.seqs['transferred']} (batch.transferred) is refused: "
                   "no site 'auh-1' is registered"),
    ]  # fmt: skip


def the_receiver_registration(bundle: Json, story: Story) -> list[tuple[str, str]]:
    unknown = f"key {signer('desert-ai').key_id} signs it, but no entry of the bundle registers"
    return [
        drop(bundle, story.seqs["desert-ai"]),
        ("signatures", f"seq {story.seqs['auh-1']}: {unknown}"),
        ("signatures", f"seq {story.seqs['transferred']}: {unknown}"),
        ("replay", f"seq {story.seqs['auh-1']} (site.registered) is refused"),
    ]


def the_genesis(bundle: Json, story: Story) -> list[tuple[str, str]]:
    unknown = f"key {signer('bis').key_id} signs it, but no entry of the bundle registers"
    authority = ["nvidia", "gulf-cloud", "desert-ai", "pack", "key", "license", "revoked"]
    return [
        drop(bundle, 0),
        ("entries", "the genesis entry (seq 0) is missing"),
        *(("signatures", f"seq {story.seqs[name]}: {unknown}") for name in authority),
        ("replay", "not run: the bundle holds no genesis entry"),
    ]


def the_rule_pack(bundle: Json, story: Story) -> list[tuple[str, str]]:
    """Nothing else needs it (H200 is in the default pack too): only the manifest tells."""
    return [drop(bundle, story.seqs["pack"])]


def the_license_grant(bundle: Json, story: Story) -> list[tuple[str, str]]:
    """Citing an unknown license is flagged, not refused: only the manifest tells."""
    return [drop(bundle, story.seqs["license"])]


def a_key_revocation(bundle: Json, story: Story) -> list[tuple[str, str]]:
    """The revoked key signs nothing after it: only the manifest tells."""
    return [drop(bundle, story.seqs["revoked"])]


def the_manifest(bundle: Json, story: Story) -> list[tuple[str, str]]:
    bundle["manifest"] = note_line(bundle["manifest"], 4, "0@2026-03-06T12:00:00Z")
    return [("manifest", "it does not open under the log key: bad signature")]


def another_batchs_manifest(bundle: Json, story: Story) -> list[tuple[str, str]]:
    """A genuine manifest, of the child's bundle, which lists fewer entries."""
    bundle["manifest"] = story.ledger.bundle("H200-1-a").manifest
    return [("manifest", "it is not a manifest of batch H200-1 of chipledger.local/ledger")]


def reordered(bundle: Json, story: Story) -> list[tuple[str, str]]:
    entries = bundle["entries"]
    entries[3], entries[4] = entries[4], entries[3]
    return [("entries", f"seq {entries[4]['seq']} comes after seq {entries[3]['seq']}")]


def duplicated(bundle: Json, story: Story) -> list[tuple[str, str]]:
    seq = story.seqs["exported"]
    bundle["entries"].insert(bundle["entries"].index(entry(bundle, seq)), entry(bundle, seq))
    return [("entries", f"seq {seq} appears 2 times"),
            ("replay", f"seq {seq} (batch.exported) repeats the event id")]  # fmt: skip


def another_batch_envelope(bundle: Json, story: Story) -> list[tuple[str, str]]:
    seq = story.seqs["exported"]
    entry(bundle, seq)["envelope"] = story.envelopes["other-exported"]
    return [
        ("inclusion proofs", f"seq {seq}: its inclusion proof does not lead"),
        ("prev links", f"seq {seq} (batch.exported of H200-9): its prev "),
        ("prev links", f"seq {story.seqs['delivered']} (batch.delivered of H200-1): its prev "),
        ("replay", f"seq {seq} (batch.exported) is refused: no batch 'H200-9'"),
    ]


def a_recorded_at(bundle: Json, story: Story) -> list[tuple[str, str]]:
    """Nothing the actor signs says when the ledger recorded it: the manifest does."""
    entry = bundle["entries"][-1]
    was, entry["recorded_at"] = entry["recorded_at"], "2026-03-06T12:00:01Z"
    assert was != entry["recorded_at"]
    return [("manifest", f"seq {entry['seq']} says it was recorded at 2026-03-06T12:00:01Z, "
                         f"the log signed {was}")]  # fmt: skip


def a_child_left_out(bundle: Json, story: Story) -> list[tuple[str, str]]:
    bundle["lineage"].remove("H200-1-b")
    bundle["heads"].pop(2)
    return [("lineage", "the bundle says the lineage is H200-1, H200-1-a, but its entries make "
                        "it H200-1, H200-1-a, H200-1-b")]  # fmt: skip


TAMPERINGS = [
    pytest.param(payload_byte, id="one-byte-of-a-payload"),
    pytest.param(cosignature_byte, id="one-byte-of-the-receivers-signature"),
    pytest.param(proof_hash, id="one-hash-of-a-proof"),
    pytest.param(checkpoint_root, id="the-checkpoints-root"),
    pytest.param(checkpoint_size, id="the-checkpoints-size"),
    pytest.param(checkpoint_signature, id="the-checkpoints-signature"),
    pytest.param(an_older_checkpoint, id="a-genuine-older-checkpoint"),
    pytest.param(head_seq, id="the-seq-of-a-head-statement"),
    pytest.param(head_by_another_key, id="a-head-statement-by-another-key"),
    pytest.param(the_batch_last_entry, id="drop-the-batchs-last-entry"),
    pytest.param(a_middle_entry, id="drop-an-entry-of-the-batch"),
    pytest.param(the_key_registration, id="drop-the-registration-of-a-key-used"),
    pytest.param(the_site_registration, id="drop-a-sites-registration"),
    pytest.param(the_receiver_registration, id="drop-a-receivers-registration"),
    pytest.param(the_genesis, id="drop-genesis"),
    pytest.param(the_rule_pack, id="drop-the-rule-pack"),
    pytest.param(the_license_grant, id="drop-the-license-grant"),
    pytest.param(a_key_revocation, id="drop-a-key-revocation"),
    pytest.param(the_manifest, id="the-manifests-seqs"),
    pytest.param(another_batchs_manifest, id="a-genuine-manifest-of-another-batch"),
    pytest.param(reordered, id="reorder-two-entries"),
    pytest.param(duplicated, id="duplicate-an-entry"),
    pytest.param(another_batch_envelope, id="swap-in-another-batchs-envelope"),
    pytest.param(a_child_left_out, id="leave-a-child-out-of-the-lineage"),
    pytest.param(a_recorded_at, id="when-an-entry-was-recorded"),
]


@pytest.mark.parametrize("tamper", TAMPERINGS)
def test_a_tampered_bundle_fails_naming_exactly_what_was_broken(
    bundle: Json, story: Story, tamper: Tampering
) -> None:
    tampered = copy.deepcopy(bundle)
    expected = tamper(tampered, story)
    report = verify_bundle(json.dumps(tampered, ensure_ascii=False).encode(), VKEY)
    assert not report.ok
    found = failures(report)
    for what, text in expected:
        assert any(w == what and text in detail for w, detail in found), (what, text, found)
    assert {w for w, _ in found} == {w for w, _ in expected}, found  # and nothing else
    assert report.summary().startswith("The bundle does NOT verify")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_flipping_any_bit_of_a_bundle_never_verifies_and_never_raises(
    bundle: Json, data: st.DataObject
) -> None:
    text = json.dumps(bundle, separators=(",", ":"), ensure_ascii=False).encode()
    at = data.draw(st.integers(0, len(text) - 1), label="byte")  # recorded_at too: the manifest
    bit = data.draw(st.sampled_from([0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40]), label="bit")
    tampered = text[:at] + bytes([text[at] ^ bit]) + text[at + 1 :]
    assert not verify_bundle(tampered, VKEY).ok


def test_a_bundle_fails_under_another_log_key(bundle: Json) -> None:
    other = verifier_key(ORIGIN, signer("not-the-log").public_key)
    found = failures(verify_bundle(bundle, other))
    assert [what for what, _ in found] == [
        "checkpoint", "manifest", "inclusion proofs", "head statements", "head statements",
        "head statements", "head statements", "head statements", "head statements",
    ]  # fmt: skip
    assert f"it does not open under the log key {other}" in found[0][1]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(b"{", "the bundle is not valid JSON", id="not-json"),
        pytest.param(b"[]", "a bundle is a JSON object", id="not-an-object"),
        pytest.param({"heads": None}, "'heads' is null", id="a-null"),
        pytest.param(
            {"manifest": "absent"}, "bundle.manifest: Field required", id="a-missing-field"
        ),
        pytest.param({"extra": 1}, "bundle.extra: Extra inputs are not permitted", id="extra"),
        pytest.param({"version": 2}, "bundle.version: Input should be 1", id="another-version"),
    ],
)
def test_a_malformed_bundle_is_refused_with_a_reason_never_an_exception(
    bundle: Json, body: bytes | Json, problem: str
) -> None:
    if isinstance(body, dict):
        changed = {**bundle, **body}
        body = json.dumps({k: v for k, v in changed.items() if v != "absent"}).encode()
    found = failures(verify_bundle(body, VKEY))
    assert len(found) == 1
    assert found[0][0] == "bundle"
    assert problem in found[0][1], found[0][1]


def test_a_malformed_log_key_is_one_failed_check(bundle: Json) -> None:
    found = failures(verify_bundle(bundle, "not-a-key"))
    assert found == [("log key", found[0][1])]
    assert "verifier key" in found[0][1]
