"""Where `chipledger audit` keeps what grows with the store: SQLite files in a temporary
directory of its own, removed when the audit ends, whether it succeeds or fails.

The files are scratch: nothing in them outlives the audit, so they are written without
waiting for the disk (`PRAGMA synchronous=OFF`); SQLite's page cache bounds the memory they
take. The audited store is never written.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool, SQLiteDatastore

from ledger.errors import NotFound

PREFIX = "chipledger-audit-"


@contextlib.contextmanager
def scratch_directory(base: str | None = None) -> Iterator[Path]:
    """A new directory under `base` (default: the system's temporary directory), removed
    with everything in it at the end."""
    if base is not None and not Path(base).is_dir():
        raise NotFound(f"there is no directory at {base} for the audit's scratch files")
    directory = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _UnsyncedPool(SQLiteConnectionPool):
    """The library's pool, each connection told not to wait for the disk before it turns
    the file to WAL mode (which the library would do first, waiting)."""

    def __init__(self, db_name: str) -> None:
        super().__init__(db_name=db_name)
        self.is_journal_mode_wal = True  # the library's own switch is left out

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA journal_mode=WAL")
        return connection


class ScratchDatastore(SQLiteDatastore):
    """A SQLite datastore for a scratch file (see the module's docstring)."""

    def __init__(self, db_name: str) -> None:
        super().__init__(db_name)
        self.pool = _UnsyncedPool(db_name=db_name)
