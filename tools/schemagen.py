"""Generate `schemas/`: the JSON Schema of the envelope, of each published event type, and of
the evidence bundle (PROTOCOL.md section 9).

The files are generated from the models in `ledger.wire` and `ledger.bundles`; a test
regenerates them and fails when the committed files drift (run `make schemas` after changing
a model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ledger.bundles import Bundle
from ledger.sessions import SessionRequested
from ledger.wire import EVENT_TYPES, Envelope, type_name
from ledger.wire.types import EventBase

BASE_URI = "https://chipledger.local/schemas/"


def _without_nulls(node: Any) -> Any:
    """Optional fields are left out, never null (PROTOCOL.md section 3): say so in the schema."""
    if isinstance(node, list):
        return [_without_nulls(item) for item in node]
    if not isinstance(node, dict):
        return node
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        inner = rest[0] if len(rest) == 1 else {"anyOf": rest}
        node = {**{k: v for k, v in node.items() if k != "anyOf"}, **inner}
    return {k: _without_nulls(v) for k, v in node.items() if not (k == "default" and v is None)}


def schema_of(model: type[BaseModel], name: str) -> dict[str, Any]:
    schema = _without_nulls(model.model_json_schema())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE_URI + name,
        **schema,
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for the envelope, every event type (the session request, which
    is never stored, included) and the bundle."""
    out = {"envelope.schema.json": schema_of(Envelope, "envelope.schema.json")}
    models: list[type[EventBase]] = [*EVENT_TYPES, SessionRequested]
    for model in models:
        name = f"{type_name(model)}.schema.json"
        out[name] = schema_of(model, name)
    out["bundle.schema.json"] = schema_of(Bundle, "bundle.schema.json")
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = out / name
        path.write_text(render(schema))
        written.append(path)
    return written
