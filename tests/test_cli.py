"""The command line (PROTOCOL.md section 10), called in-process through `main(argv)`.

Exit 0 success, 1 refusal or failed check, 2 usage error; errors are one sentence on standard
error. `submit` talks to a real `chipledger serve --port 0` on loopback, started as a
subprocess and stopped when the test ends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.application import Ledger
from ledger.canonical import canonical
from ledger.crypto import PAYLOAD_TYPE, Signer, pae, verify
from ledger.notes import verifier_key
from ledger.signing import envelope, write_secret
from tests.support import ORIGIN, Clock, World, signer
from tools.cli import main
from tools.schemagen import all_schemas, render
from tools.serving import shown

BIN = Path(sys.executable).parent
CHIPLEDGER = str(BIN / "chipledger")
HEX64 = re.compile(r"[0-9a-f]{64}")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SERVER_DEADLINE = 20.0  # seconds for `serve` to say it listens


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `chipledger ARGV...` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, ANSI.sub("", out), ANSI.sub("", err)


def one_sentence(err: str) -> bool:
    """One line a person can act on: no traceback, no usage dump."""
    lines = err.strip().splitlines()
    return len(lines) == 1 and "Traceback" not in err and lines[0].startswith("chipledger: ")


def seed_of(path: Path) -> bytes:
    text = path.read_text().strip()
    seed = base64.b64decode(text, validate=True)
    assert base64.b64encode(seed).decode() == text  # standard, padded, re-encodes the same
    return seed


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def init(
    capsys: pytest.CaptureFixture[str], store: str | Path, key: str, log_key: str | Path, *more: str
) -> tuple[int, str, str]:
    """`chipledger init --store STORE --authority-key KEY --log-key FILE ...`."""
    argv = ["--store", str(store), "--authority-key", key, "--log-key", str(log_key), *more]
    return run(capsys, "init", *argv)


@contextmanager
def opened(store: str | Path) -> Iterator[Ledger]:
    ledger = Ledger(str(store))
    try:
        yield ledger
    finally:
        ledger.close()


def key_file(directory: Path, name: str) -> Path:
    """The fixed-seed test key `name` written as a `.key` file."""
    path = directory / f"{name}.key"
    write_secret(path, signer(name))
    return path


# -- keygen ------------------------------------------------------------------------------------


def test_keygen_writes_a_secret_seed_and_a_public_key_and_prints_the_key_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "keygen", "alice", "--dir", str(tmp_path / "keys"))

    assert (code, err) == (0, "")
    secret, public = tmp_path / "keys" / "alice.key", tmp_path / "keys" / "alice.pub"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    seed = seed_of(secret)
    assert len(seed) == 32
    raw_public = base64.b64decode(public.read_text().strip(), validate=True)
    assert raw_public == Signer(seed).public_key
    assert out == hashlib.sha256(raw_public).hexdigest() + "\n"
    assert HEX64.fullmatch(out.strip())


@pytest.mark.parametrize("existing", ["alice.key", "alice.pub"], ids=["secret", "public"])
def test_keygen_never_overwrites_a_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], existing: str
) -> None:
    (tmp_path / existing).write_text("precious\n")
    before = files_of(tmp_path)

    code, out, err = run(capsys, "keygen", "alice", "--dir", str(tmp_path))

    assert (code, out) == (1, "")
    assert one_sentence(err)
    assert existing in err
    assert files_of(tmp_path) == before


# -- init --------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_file", [True, False], ids=["pub-file", "base64-text"])
def test_init_creates_a_ledger_with_the_trust_root_and_a_new_log_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_file: bool
) -> None:
    bis = signer("bis").public_key_b64
    (tmp_path / "bis.pub").write_text(bis + "\n")
    store, log_key = tmp_path / "var" / "ledger.db", tmp_path / "var" / "log.key"

    code, out, err = init(capsys, store, str(tmp_path / "bis.pub") if as_file else bis, log_key)

    assert (code, err) == (0, "")
    assert stat.S_IMODE(log_key.stat().st_mode) == 0o600
    log_public = Signer(seed_of(log_key)).public_key
    with opened(store) as ledger:
        info = ledger.ledger_info()
    assert (info.origin, info.authority.key, info.size) == (ORIGIN, bis, 0)
    assert info.log_key == verifier_key(ORIGIN, log_public)
    assert info.log_key in out


def test_init_takes_the_origin_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, bis = tmp_path / "ledger.db", signer("bis").public_key_b64

    code, _, _ = init(capsys, store, bis, tmp_path / "log.key", "--origin", "example.org/l")

    with opened(store) as ledger:
        assert (code, ledger.info.origin) == (0, "example.org/l")


def test_init_refuses_a_store_that_already_holds_a_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, first_key, second_key = (tmp_path / n for n in ("l.db", "first.key", "second.key"))
    bis = signer("bis").public_key_b64
    assert init(capsys, store, bis, first_key)[0] == 0

    code, out, err = init(capsys, store, signer("other").public_key_b64, second_key)

    assert (code, out) == (1, "")
    assert one_sentence(err)
    assert not second_key.exists()
    with opened(store) as ledger:
        assert ledger.info.authority_key == bis
        assert ledger.info.log_key == verifier_key(ORIGIN, Signer(seed_of(first_key)).public_key)


def test_init_refuses_an_existing_log_key_file_and_creates_no_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, log_key = tmp_path / "ledger.db", tmp_path / "log.key"
    log_key.write_text("precious\n")

    code, out, err = init(capsys, store, signer("bis").public_key_b64, log_key)

    assert (code, out) == (1, "")
    assert one_sentence(err)
    assert str(log_key) in err
    assert log_key.read_text() == "precious\n"
    with opened(store) as ledger:
        assert not ledger.initialised


BAD_KEYS = {
    "not-base64": "this is not a key",
    "unpadded": signer("bis").public_key_b64.rstrip("="),
    "31-bytes": base64.b64encode(b"\x01" * 31).decode(),
    "64-bytes": base64.b64encode(b"\x01" * 64).decode(),
    "pub-file-of-garbage": "@garbage.pub",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_init_refuses_a_bad_authority_key_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    store, log_key = tmp_path / "ledger.db", tmp_path / "log.key"
    if key.startswith("@"):  # a .pub file that does not hold a key
        (tmp_path / key[1:]).write_text("garbage\n")
        key = str(tmp_path / key[1:])

    code, out, err = init(capsys, store, key, log_key)

    assert (code, out) == (1, "")
    assert one_sentence(err)
    assert not log_key.exists()
    with opened(store) as ledger:
        assert not ledger.initialised


# -- sign --------------------------------------------------------------------------------------


def party_event(world: World, party_id: str) -> dict[str, Any]:
    party = {
        "id": party_id,
        "name": party_id.title(),
        "roles": ["authority"] if party_id == "bis" else ["buyer"],
        "country": "US" if party_id == "bis" else "AE",
        "keys": [signer(party_id).public_key_b64],
    }
    return world.event("party.registered", "bis", party=party)


def write_loose_json(path: Path, value: dict[str, Any]) -> Path:
    """Not canonical on purpose: indented, keys reversed; `sign` must canonicalise."""
    path.write_text(json.dumps(dict(reversed(list(value.items()))), indent=2))
    return path


@pytest.mark.parametrize(
    ("party", "keys"),
    [("bis", ["bis"]), ("gulf-cloud", ["bis", "gulf-cloud"])],
    ids=["one-key", "co-signed"],
)
def test_sign_prints_a_canonical_envelope_whose_signatures_verify(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    world: World,
    party: str,
    keys: list[str],
) -> None:
    event = party_event(world, party)
    event_file = write_loose_json(tmp_path / "event.json", event)
    key_args = [arg for name in keys for arg in ("--key", str(key_file(tmp_path, name)))]

    code, out, err = run(capsys, "sign", str(event_file), *key_args)

    assert (code, err) == (0, "")
    printed = json.loads(out)
    assert out.rstrip("\n").encode() == canonical(printed)
    assert set(printed) == {"payloadType", "payload", "signatures"}
    assert printed["payloadType"] == PAYLOAD_TYPE
    payload = base64.b64decode(printed["payload"], validate=True)
    assert payload == canonical(event)
    assert [s["keyid"] for s in printed["signatures"]] == [signer(k).key_id for k in keys]
    for signature, name in zip(printed["signatures"], keys, strict=True):
        assert set(signature) == {"keyid", "sig"}
        sig = base64.b64decode(signature["sig"], validate=True)
        assert verify(signer(name).public_key, pae(PAYLOAD_TYPE, payload), sig)
    assert printed == envelope(event, [signer(k) for k in keys])  # Ed25519 is deterministic


def test_signed_envelopes_are_accepted_by_a_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], world: World, ledger: Ledger
) -> None:
    bis, gulf = key_file(tmp_path, "bis"), key_file(tmp_path, "gulf-cloud")
    genesis = write_loose_json(tmp_path / "genesis.json", party_event(world, "bis"))
    buyer = write_loose_json(tmp_path / "buyer.json", party_event(world, "gulf-cloud"))

    signed = [
        run(capsys, "sign", str(genesis), "--key", str(bis))[1],
        run(capsys, "sign", str(buyer), "--key", str(bis), "--key", str(gulf))[1],
    ]

    receipts = [ledger.submit(text.encode()).receipt for text in signed]
    assert [r.seq for r in receipts] == [0, 1]


def test_sign_refuses_a_missing_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], world: World
) -> None:
    event_file = write_loose_json(tmp_path / "event.json", party_event(world, "bis"))

    code, out, err = run(capsys, "sign", str(event_file), "--key", str(tmp_path / "nope.key"))

    assert (code, out) == (1, "")
    assert one_sentence(err)


# -- demo and schemas --------------------------------------------------------------------------


def test_demo_creates_a_ledger_with_entries_and_leaves_it_alone_the_second_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, directory = str(tmp_path / "demo.db"), tmp_path / "var"

    first = run(capsys, "demo", "--store", store, "--dir", str(directory))
    with opened(store) as ledger:
        size, entries = ledger.size(), ledger.log_entries(0, 1000)
    keys = files_of(directory)
    second = run(capsys, "demo", "--store", store, "--dir", str(directory))

    assert first[0] == 0
    assert size > 0
    assert (tmp_path / "var" / "keys" / "bis.key").exists()
    assert second[0] == 0
    assert "already holds a ledger" in second[1]
    with opened(store) as ledger:
        assert (ledger.size(), ledger.log_entries(0, 1000)) == (size, entries)
        for out in (first[1], second[1]):  # each run prints a fresh investigator's token
            token = out.strip().splitlines()[-1].rsplit(": ", 1)[1]
            assert ledger.session_party(token) == "audit-office"
            assert ledger.reader(token).sees_all
    assert files_of(directory) == keys


def test_schemas_writes_one_file_per_published_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "schemas"

    code, out, _ = run(capsys, "schemas", "--out", str(out_dir))

    expected = all_schemas()
    assert code == 0
    assert "envelope.schema.json" in expected
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(expected)
    for name, schema in expected.items():
        assert (out_dir / name).read_text() == render(schema)
        assert str(out_dir / name) in out


# -- usage and help ----------------------------------------------------------------------------


USAGE_ERRORS = {
    "unknown-command": ["frobnicate"],
    "keygen-without-name": ["keygen"],
    "init-without-authority-key": ["init", "--store", "x.db"],
    "sign-without-key": ["sign", "event.json"],
    "submit-without-files": ["submit"],
    "unknown-option": ["keygen", "alice", "--colour", "blue"],
    "port-not-a-number": ["serve", "--port", "eighty"],
}


@pytest.mark.parametrize("argv", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_error_exits_2_and_says_how_to_get_help(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)

    assert code == 2
    assert "--help" in err
    assert out == ""


HELP = {
    "chipledger": ([], ["keygen", "init", "serve", "sign", "submit", "demo", "schemas"]),
    "keygen": (["keygen"], ["--dir", "NAME.key", "NAME.pub"]),
    "init": (["init"], ["--store", "--authority-key", "--origin", "--log-key"]),
    "serve": (["serve"], ["--store", "--log-key", "--host", "--port", "--open-reads"]),
    "sign": (["sign"], ["--key"]),
    "submit": (["submit"], ["--url"]),
    "demo": (["demo"], ["--store", "--dir"]),
    "schemas": (["schemas"], ["--out"]),
}


@pytest.mark.parametrize(("command", "mentions"), HELP.values(), ids=HELP.keys())
def test_help_exits_0_and_says_what_to_type(
    capsys: pytest.CaptureFixture[str], command: list[str], mentions: list[str]
) -> None:
    code, out, _ = run(capsys, *command, "--help")

    assert code == 0
    assert f"Usage: {' '.join(['chipledger', *command])}" in out
    for word in mentions:
        assert word in out


def test_chipledger_console_script_is_installed() -> None:
    done = subprocess.run(
        [CHIPLEDGER, "--help"], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0
    assert "Usage: chipledger" in ANSI.sub("", done.stdout)


@pytest.mark.parametrize(
    ("store", "printed"),
    [
        (
            "postgresql://ledger:s3cret@db:5432/chip?schema=a",
            "postgresql://ledger:***@db:5432/chip?schema=a",
        ),
        ("postgresql://ledger@db/chip", "postgresql://ledger@db/chip"),
        ("var/chipledger.db", "var/chipledger.db"),
    ],
    ids=["password-hidden", "no-password", "sqlite"],
)
def test_serve_prints_its_store_without_a_password(store: str, printed: str) -> None:
    assert shown(store) == printed  # the line goes to the service's log


# -- submit against a real server --------------------------------------------------------------


@dataclass
class Server:
    url: str
    store: str


def _pump(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _listening_url(lines: queue.Queue[str], process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + SERVER_DEADLINE
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if found := re.search(r"listening on (http://127\.0\.0\.1:\d+)", line):
            return found.group(1)
    pytest.fail(f"serve did not listen within {SERVER_DEADLINE}s (exit {process.poll()}): {seen}")


@pytest.fixture
def server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Server]:
    """`chipledger serve --port 0` on a new ledger whose trust root is the `bis` test key."""
    store, log_key = str(tmp_path / "served.db"), str(tmp_path / "log.key")
    assert init(capsys, store, signer("bis").public_key_b64, log_key)[0] == 0
    process = subprocess.Popen(
        [CHIPLEDGER, "serve", "--store", store, "--log-key", log_key, "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stderr, lines), daemon=True).start()
    try:
        yield Server(_listening_url(lines, process), store)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def live_world() -> World:
    """Events stamped with the real time: the server's ledger runs on the real clock."""
    return World(Clock(datetime.now(UTC).replace(microsecond=0)))


def write_envelope(path: Path, value: dict[str, Any]) -> str:
    path.write_bytes(canonical(value))
    return str(path)


def served_size(server: Server) -> int:
    with opened(server.store) as ledger:
        return ledger.size()


def test_submit_prints_one_receipt_per_envelope_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: Server, live_world: World
) -> None:
    genesis, buyer = live_world.genesis(), live_world.party("gulf-cloud", ["buyer"])
    files = [
        write_envelope(tmp_path / "g.json", genesis),
        write_envelope(tmp_path / "b.json", buyer),
    ]

    code, out, err = run(capsys, "submit", *files, "--url", server.url)

    assert (code, err) == (0, "")
    receipts = [json.loads(line) for line in out.splitlines()]
    assert [(r["seq"], r["type"]) for r in receipts] == [
        (0, "party.registered"),
        (1, "party.registered"),
    ]
    assert [r["id"] for r in receipts] == [
        json.loads(base64.b64decode(e["payload"]))["id"] for e in (genesis, buyer)
    ]
    assert served_size(server) == 2

    again = run(capsys, "submit", files[0], "--url", server.url)
    assert (again[0], json.loads(again[1])) == (0, receipts[0])  # a repeat: the original receipt


def test_submit_stops_at_a_refusal_exits_1_and_shows_the_servers_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: Server, live_world: World
) -> None:
    genesis = write_envelope(tmp_path / "g.json", live_world.genesis())
    unsigned_by_party = live_world.envelope(party_event(live_world, "gulf-cloud"), "bis")
    refused = write_envelope(tmp_path / "refused.json", unsigned_by_party)
    after = write_envelope(tmp_path / "after.json", live_world.party("desert-ai", ["buyer"]))
    assert run(capsys, "submit", genesis, "--url", server.url)[0] == 0
    answer = httpx.post(f"{server.url}/v1/events", content=Path(refused).read_bytes(), timeout=30)
    error = answer.json()["error"]

    code, out, err = run(capsys, "submit", refused, after, "--url", server.url)

    assert (answer.status_code, error["code"]) == (403, "not_authorized")
    assert (code, out) == (1, "")
    assert one_sentence(err)
    assert refused in err
    assert error["message"] in err
    assert "403" in err
    assert served_size(server) == 1  # nothing after the first refusal was sent


def test_submit_to_a_port_where_nothing_listens_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], live_world: World
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    envelope_file = write_envelope(tmp_path / "g.json", live_world.genesis())

    code, _, err = run(capsys, "submit", envelope_file, "--url", f"http://127.0.0.1:{port}")

    assert code == 1
    assert one_sentence(err)


def test_the_demo_shows_the_flags_issue_4_asks_for_and_none_on_scenario_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "demo.db")
    run(capsys, "demo", "--store", store, "--dir", str(tmp_path / "var"))

    with opened(store) as ledger:
        raised = {(f["rule"], f.get("batch")) for f in ledger.flags({}).flags}
        scenario_1 = ledger.flags({"batch": "H200-0001"}).flags

    assert {
        ("embargoed-destination", "H100-0008"),  # an embargoed export
        ("site-threshold", "B200-0009"),  # an unlicensed large install
        ("transfer-not-authorized", "H200-0010"),  # a transfer the license does not allow
        ("attestation-overdue", "H100-0011"),  # an overdue attestation
    } <= raised
    assert scenario_1 == []


def test_session_prints_a_token_for_the_party_of_the_key_and_refuses_a_stranger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: Server, live_world: World
) -> None:
    for value in (live_world.genesis(), live_world.party("gulf-cloud", ["buyer"])):
        assert httpx.post(f"{server.url}/v1/events", json=value, timeout=30).status_code == 201
    key = tmp_path / "gulf-cloud.key"
    write_secret(key, signer("gulf-cloud"))

    code, out, err = run(capsys, "session", "--key", str(key), "--url", server.url)

    assert code == 0
    token = out.strip()
    assert "a token for gulf-cloud, until " in err
    with opened(server.store) as ledger:
        assert ledger.session_party(token) == "gulf-cloud"
        size = ledger.size()
    stranger = tmp_path / "stranger.key"
    write_secret(stranger, signer("stranger"))
    code, out, err = run(capsys, "session", "--key", str(stranger), "--url", server.url)
    assert (code, out) == (1, "")
    assert "no session for 'stranger'" in err
    assert one_sentence(err)
    assert served_size(server) == size  # a session never enters the log
