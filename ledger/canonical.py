"""Bytes in and bytes out: strict JSON, RFC 8785 canonical form, strict base64.

One function makes canonical bytes (`canonical`), one parses untrusted JSON (`parse_json`),
one decodes base64 (`b64decode_strict`). Parsing refuses what PROTOCOL.md section 1-2 refuses:
duplicated keys anywhere, NaN and Infinity, invalid UTF-8. It does not check any schema.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import rfc8785

from ledger.errors import BadRequest, InvalidEvent


class DuplicateKey(ValueError):
    """A JSON object names the same key twice."""


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes, what: str = "body") -> Any:
    """Parse untrusted JSON: BadRequest if it is not JSON, InvalidEvent on a duplicated key."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the {what} is not UTF-8 text (byte {exc.start}); send JSON") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
        )
    except DuplicateKey as exc:
        raise InvalidEvent(
            f"the {what} names the key {exc.args[0]!r} twice; every key must appear once"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the {what} is not valid JSON: {exc}") from None


_FAST = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _plain(value: Any) -> bool:
    """True for JSON made of ASCII keys, strings, ints in the safe range, bools and null.

    For such values the standard library's sorted, compact output is byte for byte RFC 8785:
    ASCII keys sort the same by code point as by UTF-16 unit, no float needs formatting, and
    both escape exactly `"`, `\\` and the control characters, with the same short forms.
    """
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**53) < value < 2**53
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(key.isascii() and _plain(item) for key, item in value.items())
    return False


def canonical(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value: the one byte form that is signed and hashed.

    The `rfc8785` package defines the form; plain values (`_plain`) take the standard
    library's faster path to the same bytes, which a property test holds to `rfc8785`.
    """
    try:
        if _plain(value):
            return _FAST.encode(value).encode("utf-8")
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise InvalidEvent(f"the value cannot be put in canonical JSON form: {exc}") from None
    except RecursionError:
        raise InvalidEvent("the value is nested too deeply to be put in canonical form") from None
    except UnicodeEncodeError:
        raise InvalidEvent("the value holds a lone surrogate, which is not Unicode text") from None


class _NotPlain(Exception):
    """A float, NaN or an integer outside the safe range: not for the fast path."""


def _not_plain(_: str) -> Any:
    raise _NotPlain


def _safe_int(text: str) -> int:
    value = int(text)
    if not -(2**53) < value < 2**53:
        raise _NotPlain
    return value


_PLAIN_DECODER = json.JSONDecoder(
    parse_float=_not_plain, parse_int=_safe_int, parse_constant=_not_plain
)


def canonical_text(data: bytes) -> Any:
    """The JSON value of `data` when `data` is plainly its canonical form, else None.

    For ASCII text of plain values (no floats, safe integers) the standard library's
    sorted, compact output is RFC 8785 (see `_plain`); if it reproduces `data` exactly, then
    `data` is canonical. None means "not shown here": `parse_json` and `canonical` decide,
    and say what is wrong (a duplicated key, for one, re-encodes shorter and lands there).
    """
    if not data.isascii():
        return None
    text = data.decode("ascii")
    try:
        value = _PLAIN_DECODER.decode(text)
    except (_NotPlain, ValueError, RecursionError):
        return None
    return value if _FAST.encode(value) == text else None


def b64encode(data: bytes) -> str:
    """Standard, padded base64 (RFC 4648 section 4)."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str, what: str) -> bytes:
    """Decode standard padded base64 that re-encodes to exactly the same text."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidEvent(f"{what} is not standard padded base64") from None
    if b64encode(data) != text:
        raise InvalidEvent(f"{what} is not in canonical base64 form (it must re-encode exactly)")
    return data
