"""A chipledger client written from PROTOCOL.md alone.

It deliberately imports nothing from the project (`ledger`, `api`, `tools`, `tests.support`):
canonical JSON is RFC 8785 (the `rfc8785` package), envelopes are DSSE signed with Ed25519
(PyNaCl), HTTP is `httpx`, and the server is the `chipledger` command run as a subprocess.
Section numbers below refer to PROTOCOL.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import rfc8785

PAYLOAD_TYPE = "application/vnd.chipledger.event.v1+json"
DEFAULT_ORIGIN = "chipledger.local/ledger"

JSONObject = dict[str, Any]


# --- values (section 1) ---------------------------------------------------------------------


def canonical(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value."""
    return rfc8785.dumps(value)


def b64encode(data: bytes) -> str:
    """Standard, padded base64 (RFC 4648 section 4)."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes:
    """Decode standard padded base64 that re-encodes to the very same text, else ValueError."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"not standard base64: {text!r}") from exc
    if b64encode(data) != text:
        raise ValueError(f"base64 that does not re-encode to itself: {text!r}")
    return data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_id(public_key: bytes) -> str:
    """Lowercase hex SHA-256 of the raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return sha256_hex(public_key)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with `Z`, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    """An RFC 3339 UTC time with `Z` (fractional seconds allowed), as an aware datetime."""
    if not text.endswith("Z"):
        raise ValueError(f"not an RFC 3339 UTC time with Z: {text!r}")
    return datetime.fromisoformat(text[:-1] + "+00:00").astimezone(UTC)


class Timeline:
    """Distinct, increasing event times in the past, `step` apart from `start` on.

    For `as_of` by time (section 6) events need distinct `at`s; none may be later than the
    caller's clock, so running out of past is an error rather than a time in the future.
    """

    def __init__(self, start: datetime, step: timedelta) -> None:
        if step <= timedelta(0):
            raise ValueError("a timeline moves forward")
        self._next = start.astimezone(UTC).replace(microsecond=0)
        self._step = step

    def next(self) -> str:
        moment = self._next
        if moment > now():
            raise RuntimeError("the timeline has caught up with the clock: start it earlier")
        self._next = moment + self._step
        return format_time(moment)


def new_event_id() -> str:
    """A lowercase hex-and-dash UUID."""
    return str(uuid.uuid4())


def make_event(
    type_: str,
    actor: str,
    *,
    origin: str = DEFAULT_ORIGIN,
    at: str | None = None,
    event_id: str | None = None,
    **fields: Any,
) -> JSONObject:
    """An event object: the common fields of section 3, then the type's own."""
    event: JSONObject = {
        "type": type_,
        "id": event_id if event_id is not None else new_event_id(),
        "ledger": origin,
        "actor": actor,
        "at": at if at is not None else format_time(now()),
    }
    event.update(fields)
    return event


# --- signing (section 2) --------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True)
class Signer:
    """An Ed25519 key pair, from its 32-byte seed."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")

    @classmethod
    def from_label(cls, label: str) -> Signer:
        """A fixed key for tests: the seed is SHA-256 of the label."""
        return cls(hashlib.sha256(f"chipledger independent client: {label}".encode()).digest())

    @classmethod
    def from_key_file(cls, path: Path) -> Signer:
        """Read a `.key` file of section 10: base64 of the 32-byte seed."""
        return cls(b64decode_strict(path.read_text().strip()))

    @property
    def _signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def public_key_b64(self) -> str:
        return b64encode(self.public_key)

    @property
    def keyid(self) -> str:
        return key_id(self.public_key)

    def sign_bytes(self, message: bytes) -> bytes:
        return bytes(self._signing_key.sign(message).signature)

    def signature(self, payload: bytes, payload_type: str = PAYLOAD_TYPE) -> JSONObject:
        """A DSSE signature object over `payload`."""
        return {"keyid": self.keyid, "sig": b64encode(self.sign_bytes(pae(payload_type, payload)))}

    def write_files(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write NAME.key (base64 seed, mode 0600) and NAME.pub (base64 public key)."""
        key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
        key_path.write_text(b64encode(self.seed) + "\n")
        key_path.chmod(0o600)
        pub_path.write_text(self.public_key_b64 + "\n")
        return key_path, pub_path


def envelope_for_payload(
    payload: bytes, signers: Iterable[Signer], payload_type: str = PAYLOAD_TYPE
) -> JSONObject:
    """A DSSE envelope over arbitrary payload bytes (canonical or not)."""
    return {
        "payloadType": payload_type,
        "payload": b64encode(payload),
        "signatures": [signer.signature(payload, payload_type) for signer in signers],
    }


def sign(event: Mapping[str, Any], signers: Iterable[Signer]) -> JSONObject:
    """The envelope of an event: its RFC 8785 bytes, signed by each signer in order."""
    return envelope_for_payload(canonical(dict(event)), signers)


def payload_bytes(envelope: Mapping[str, Any]) -> bytes:
    return b64decode_strict(str(envelope["payload"]))


def verify_envelope(envelope: Mapping[str, Any], public_keys: Sequence[bytes]) -> bool:
    """True if every signature verifies under one of the given keys, by key id."""
    by_id = {key_id(key): key for key in public_keys}
    message = pae(str(envelope["payloadType"]), payload_bytes(envelope))
    for item in envelope["signatures"]:
        key = by_id.get(item["keyid"])
        if key is None:
            return False
        try:
            nacl.signing.VerifyKey(key).verify(message, b64decode_strict(item["sig"]))
        except Exception:
            return False
    return True


def envelope_hash(envelope: Mapping[str, Any]) -> str:
    return sha256_hex(canonical(dict(envelope)))


def leaf_hash(envelope: Mapping[str, Any]) -> str:
    return sha256_hex(b"\x00" + canonical(dict(envelope)))


# --- the log key's names (section 8) --------------------------------------------------------


def note_key_id(origin: str, public_key: bytes) -> bytes:
    return hashlib.sha256(origin.encode() + b"\x0a\x01" + public_key).digest()[:4]


def verifier_key(origin: str, public_key: bytes) -> str:
    encoded = b64encode(b"\x01" + public_key)
    return f"{origin}+{note_key_id(origin, public_key).hex()}+{encoded}"


# --- HTTP (section 6) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One accepted event: what was signed, what was sent, and the receipt that came back."""

    event: JSONObject
    envelope: JSONObject
    receipt: JSONObject

    @property
    def seq(self) -> int:
        return int(self.receipt["seq"])

    @property
    def hash(self) -> str:
        return envelope_hash(self.envelope)

    @property
    def at(self) -> str:
        return str(self.event["at"])

    @property
    def findings(self) -> list[JSONObject]:
        found: list[JSONObject] = self.receipt["findings"]
        return found

    @property
    def rules(self) -> list[str]:
        return [str(finding["rule"]) for finding in self.findings]


class LedgerClient:
    """Talks to a chipledger server over HTTP; sends canonical JSON bodies."""

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post_raw(self, path: str, body: bytes) -> httpx.Response:
        return self._http.post(path, content=body, headers={"Content-Type": "application/json"})

    def post_event(self, envelope: Mapping[str, Any]) -> httpx.Response:
        return self.post_raw("/v1/events", canonical(dict(envelope)))

    def post_batch(self, envelopes: Sequence[Mapping[str, Any]]) -> httpx.Response:
        return self.post_raw(
            "/v1/events/batch", canonical({"envelopes": [dict(e) for e in envelopes]})
        )

    def ledger(self) -> JSONObject:
        response = self._http.get("/v1/ledger")
        response.raise_for_status()
        body: JSONObject = response.json()
        return body

    def size(self) -> int:
        return int(self.ledger()["size"])

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self._http.get(path, headers=headers)

    def read(
        self, path: str, as_of: int | str | None = None, token: str | None = None
    ) -> httpx.Response:
        """A state read, `as_of` a seq (int) or an RFC 3339 time (str) when given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        params = {} if as_of is None else {"as_of": str(as_of)}
        return self._http.get(path, headers=headers, params=params)


# --- the command line (section 10) ----------------------------------------------------------


def chipledger_command() -> str:
    """The `chipledger` executable next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "chipledger"
    if beside.exists():
        return str(beside)
    found = shutil.which("chipledger")
    if found is None:
        raise RuntimeError("no chipledger command next to this Python nor on PATH")
    return found


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chipledger_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))\s*$")


def init_ledger(directory: Path, trust_root: Signer) -> tuple[Path, Path]:
    """`chipledger init` with our own trust-root key files; the store and log key paths."""
    trust_root.write_files(directory, "bis")
    store, log_key = directory / "ledger.db", directory / "log.key"
    init = run_cli(
        "init",
        "--store",
        str(store),
        "--authority-key",
        str(directory / "bis.pub"),
        "--log-key",
        str(log_key),
    )
    assert init.returncode == 0, init.stdout + init.stderr
    return store, log_key


def accepted_step(client: LedgerClient, event: JSONObject, signers: Sequence[Signer]) -> Step:
    """Sign `event`, post it, and insist it is accepted (201) with a receipt that names it."""
    envelope = sign(event, signers)
    response = client.post_event(envelope)
    assert response.status_code == 201, (
        f"{event['type']} {event.get('batch', '')}: {response.status_code} {response.text}"
    )
    receipt: JSONObject = response.json()
    assert receipt["envelope_hash"] == envelope_hash(envelope)
    assert receipt["id"] == event["id"]
    return Step(event, envelope, receipt)


class ServerStartError(RuntimeError):
    pass


@dataclass
class ServerProcess:
    """`chipledger serve --port 0` on loopback, read until it says where it listens.

    `store` is a SQLite file or a `postgresql://` URL; `workers` above 1 adds `--workers N`."""

    store: Path | str
    log_key: Path
    open_reads: bool = False
    workers: int = 1
    startup_deadline: float = 30.0
    url: str = ""
    stderr_lines: list[str] = field(default_factory=list)
    _process: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None

    def start(self) -> str:
        if self._process is not None:
            raise RuntimeError("the server is already running")
        self.stderr_lines = []
        process = subprocess.Popen(
            [
                chipledger_command(),
                "serve",
                "--store",
                str(self.store),
                "--log-key",
                str(self.log_key),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                *(["--open-reads"] if self.open_reads else []),
                *(["--workers", str(self.workers)] if self.workers != 1 else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._process = process
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            # Drains stderr for the life of the process so the server never blocks on it.
            assert process.stderr is not None
            for line in process.stderr:
                self.stderr_lines.append(line)
                lines.put(line)
            lines.put(None)

        self._reader = threading.Thread(target=read, name="chipledger-serve-stderr", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_deadline
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.0)) if remaining > 0 else None
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise ServerStartError(
                    f"chipledger serve did not say `listening on http://127.0.0.1:PORT` within "
                    f"{self.startup_deadline:.0f} s (exit code {process.returncode}); its "
                    f"standard error was:\n{''.join(self.stderr_lines)}"
                )
            match = LISTENING.search(line)
            if match:
                self.url = match.group(1)
                return self.url

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None
        self.url = ""

    def restart(self) -> str:
        self.stop()
        return self.start()
