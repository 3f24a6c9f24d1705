"""`built`: a pydantic model made from values the ledger produced itself, without validation.

The hot path of acceptance makes several models per envelope (the log entry, the receipt,
the stored batch event, the batch's snapshot) from values it has just checked or computed.
`model_construct` skips validation but still walks every field; `built` assigns the values
directly. It refuses a call that leaves a required field out or names one the model does not
have, so it cannot make a model that validation would have refused for its fields; the
values' types are the caller's promise, held by the tests that compare built models with
validated ones.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


_FIELDS: dict[type[BaseModel], tuple[frozenset[str], dict[str, Any]]] = {}
_set = object.__setattr__


def _fields(cls: type[BaseModel]) -> tuple[frozenset[str], dict[str, Any]]:
    fields = cls.model_fields
    found = _FIELDS[cls] = (
        frozenset(fields),
        {n: f.default for n, f in fields.items() if not f.is_required()},
    )
    return found


def built(cls: type[M], **values: Any) -> M:
    names, defaults = _FIELDS.get(cls) or _fields(cls)
    if values.keys() != names:
        values = {**defaults, **values}
        if values.keys() != names:
            wrong = sorted(values.keys() ^ names)
            raise TypeError(f"{cls.__name__} cannot be built: fields {wrong}")
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model
