"""How stored events become bytes, and how a STORE string becomes an eventsourcing environment.

`PydanticMapper` and `JsonTranscoder` are selected through the application's environment
(MAPPER_TOPIC, TRANSCODER_TOPIC). `store_env` turns a SQLite path or a `postgresql://` URL
into the library's own settings. The recorders are the library's, each with one table more
(`ledger.recorders`: accepted event ids, written in the same transaction).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit
from uuid import UUID

from eventsourcing.application import Repository, project_aggregate
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import BaseModel

from ledger.errors import BadRequest


class JsonTranscoder(Transcoder):
    """Plain JSON values to compact UTF-8 bytes and back; no custom types."""

    def encode(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class PydanticMapper(Mapper[UUID]):
    """Maps pydantic domain events to stored events through their JSON form."""

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        model = cast(BaseModel, domain_event)
        # pydantic's own serializer writes the JSON; the transcoder reads it back.
        state = model.model_dump_json(
            exclude={"originator_id", "originator_version"}, exclude_none=True
        )
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=state.encode("utf-8"),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        cls: type[BaseModel] = resolve_topic(stored_event.topic)
        state = self.transcoder.decode(stored_event.state)
        state["originator_id"] = stored_event.originator_id
        state["originator_version"] = stored_event.originator_version
        return cast(DomainEventProtocol[UUID], cls.model_validate(state))


BASE_ENV = {
    "MAPPER_TOPIC": get_topic(PydanticMapper),
    "TRANSCODER_TOPIC": get_topic(JsonTranscoder),
}


def store_env(store: str) -> dict[str, str]:
    """The eventsourcing environment for a STORE: a SQLite file path or a postgresql:// URL."""
    if store.startswith(("postgresql://", "postgres://")):
        return {**BASE_ENV, **_postgres_env(store)}
    if "://" in store:
        raise BadRequest(f"the store {store!r} is neither a file path nor a postgresql:// URL")
    path = Path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        **BASE_ENV,
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "APPLICATION_RECORDER_TOPIC": "ledger.recorders:SQLiteLedgerRecorder",
        "SQLITE_DBNAME": str(path),
    }


def _postgres_env(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": "ledger.recorders_postgres:PostgresLedgerRecorder",
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        # The library's insert function would bypass the recorder's `_insert_events`, and with
        # it the event ids, the tree and the checkpoints written in the same transaction.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
    }
    if "schema" in query:
        env["POSTGRES_SCHEMA"] = query["schema"]
    return env


def project(aggregate: Any, stored: Iterable[Any]) -> Any:
    """The library's `project_aggregate` without its per-event `isinstance` of a runtime
    protocol: a third of rebuilding a license or a site (about 30 events each at 10^6
    entries) went to that check. Every event here is one of `ledger.events`, all mutators."""
    for event in stored:
        aggregate = event.mutate(aggregate)
    return aggregate


class LedgerRepository(Repository[UUID]):
    """The library's repository, rebuilding aggregates with `project`."""

    def _reconstruct_aggregate(
        self, aggregate_id: UUID, version: int | None, projector_func: Any
    ) -> Any:
        if projector_func is project_aggregate:
            projector_func = project
        return super()._reconstruct_aggregate(aggregate_id, version, projector_func)
