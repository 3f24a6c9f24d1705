"""The committed `schemas/` are exactly what `tools.schemagen` generates from `ledger.wire`.

If a drift test fails, a model changed without regenerating the files: run `make schemas` and
commit the result. The validation tests check the vector envelope (tests/vectors/envelope.json,
a verbatim copy of /work/shared/vectors/envelope.json) and generated events against the
committed schemas; they need `jsonschema`, which is not a project dependency, and skip without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger.canonical import b64decode_strict
from tests.support import Clock, World
from tools.schemagen import all_schemas, render

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
VECTORS = Path(__file__).parent / "vectors"
GENERATED = all_schemas()
REGENERATE = "run `make schemas` and commit the result"


def test_schemas_directory_holds_exactly_the_generated_files() -> None:
    committed = {p.name for p in SCHEMAS.glob("*.schema.json")}
    others = {p.name for p in SCHEMAS.iterdir()} - committed
    missing, extra = sorted(set(GENERATED) - committed), sorted(committed - set(GENERATED))
    assert not missing, f"schemas/ lacks {missing}; {REGENERATE}"
    assert not extra, f"schemas/ holds {extra}, which no model generates; {REGENERATE}"
    assert not others, f"schemas/ holds files that are not schemas: {sorted(others)}"


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_committed_schema_equals_the_generated_one(name: str) -> None:
    path = SCHEMAS / name
    assert path.is_file(), f"schemas/{name} is missing; {REGENERATE}"
    assert path.read_text() == render(GENERATED[name]), (
        f"schemas/{name} differs from what ledger.wire generates; {REGENERATE}"
    )


def test_every_event_schema_names_its_type_and_forbids_unknown_fields() -> None:
    for name, schema in GENERATED.items():
        assert schema["additionalProperties"] is False, name
        if name != "envelope.schema.json":
            event_type = name.removesuffix(".schema.json")
            assert schema["properties"]["type"]["const"] == event_type


# -- validation against the committed files (needs jsonschema) -------------------------------


def _validator(name: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft202012Validator(schema)


def _events() -> list[dict[str, Any]]:
    world = World(Clock())
    envelopes = [
        world.genesis(),
        world.party("gulf-cloud", ["buyer"], "AE", hq_country="US"),
        world.site("dxb-1", "gulf-cloud"),
    ]
    return [json.loads(b64decode_strict(e["payload"], "payload")) for e in envelopes]


def _vector_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / "envelope.json").read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", _vector_cases(), ids=[c["name"] for c in _vector_cases()])
def test_vector_envelope_is_valid_under_the_envelope_schema(case: dict[str, Any]) -> None:
    _validator("envelope.schema.json").validate(case["envelope"])


def test_vector_genesis_event_is_valid_under_its_schema() -> None:
    event = _vector_cases()[0]["event"]
    _validator(f"{event['type']}.schema.json").validate(event)


@pytest.mark.parametrize("event", _events(), ids=lambda e: f"{e['type']}-{e['actor']}")
def test_generated_event_is_valid_under_its_schema(event: dict[str, Any]) -> None:
    _validator(f"{event['type']}.schema.json").validate(event)


def test_event_with_an_unknown_field_is_invalid_under_its_schema() -> None:
    event = {**_events()[0], "note": "not in the protocol"}
    assert not _validator("party.registered.schema.json").is_valid(event)


def test_envelope_with_an_extra_signature_field_is_invalid_under_the_schema() -> None:
    envelope = json.loads(json.dumps(_vector_cases()[0]["envelope"]))
    envelope["signatures"][0]["public_key"] = "not in the protocol"
    assert not _validator("envelope.schema.json").is_valid(envelope)
