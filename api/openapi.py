"""Request-body documentation for the routes that read raw bytes (OpenAPI only)."""

from __future__ import annotations

from typing import Any

from ledger.wire import Envelope

_ENVELOPE_SCHEMA = Envelope.model_json_schema(ref_template="#/components/schemas/{model}")


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs", {})
    text = {k: v for k, v in schema.items() if k != "$defs"}
    props = dict(text["properties"])
    sig = defs.get("Signature")
    if sig:
        props["signatures"] = {**props["signatures"], "items": sig}
    return {**text, "properties": props}


ENVELOPE = _inline(_ENVELOPE_SCHEMA)
ENVELOPE_BODY = _body(ENVELOPE)
BATCH_BODY = _body(
    {
        "type": "object",
        "required": ["envelopes"],
        "additionalProperties": False,
        "properties": {
            "envelopes": {"type": "array", "minItems": 1, "maxItems": 1000, "items": ENVELOPE}
        },
    }
)
