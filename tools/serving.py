"""`chipledger serve`: one listening socket, served by this process or by N worker processes.

With `--workers 1` the ledger opened by `serve` is served in-process. With more, uvicorn's
supervisor spawns N workers that share the socket; each opens its own `Ledger` through
`app_from_env`, an app factory that reads the serving settings from `CHIPLEDGER_SERVE` (and
the log key from its file). Workers share nothing but the store: writes are serialized by it
(`seq` is the version of the log stream), and each read catches up with what others wrote.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ledger.errors import LedgerError
from ledger.signing import read_signer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ledger.application import Ledger

ENV_VAR = "CHIPLEDGER_SERVE"
FACTORY = "tools.serving:app_from_env"


@dataclass(frozen=True)
class Serving:
    """What every process serving one ledger needs to open it the same way."""

    store: str
    log_key: str
    open_reads: bool = False
    session_minutes: int = 60

    def open(self) -> Ledger:
        """The ledger, holding its log key (refused if it is not this ledger's)."""
        signer = read_signer(Path(self.log_key))  # before the heavy import and the store
        from ledger.application import Ledger

        ledger = Ledger(self.store)
        ledger.use_log_key(signer)
        ledger.session_lifetime = timedelta(minutes=self.session_minutes)
        return ledger

    def app(self, ledger: Ledger) -> FastAPI:
        from api import create_app

        return create_app(ledger, open_reads=self.open_reads)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Serving:
        text = os.environ.get(ENV_VAR)
        if text is None:
            raise RuntimeError(f"{ENV_VAR} is not set: workers are started by `chipledger serve`")
        return cls(**json.loads(text))


def app_from_env() -> FastAPI:
    """The app factory each worker process calls (uvicorn `--factory`): its own `Ledger`.

    A worker that cannot open it exits with uvicorn's startup-failure code, so that the
    supervisor stops instead of starting it again and again."""
    from uvicorn.config import STARTUP_FAILURE

    try:
        serving = Serving.from_env()
        return serving.app(serving.open())
    except LedgerError as exc:
        print(f"chipledger: worker {os.getpid()}: {exc.message}", file=sys.stderr)
    except Exception:
        traceback.print_exc()
    sys.exit(STARTUP_FAILURE)


def shown(store: str) -> str:
    """The store as `serve` prints it: a PostgreSQL URL without its password (the line goes
    to the service's log)."""
    parts = urlsplit(store)
    if parts.password is None:
        return store
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (`port` 0 picks a free one), shared by every worker."""
    sock = socket.create_server((host, port))
    # Accepted connections inherit this: without it Nagle's algorithm meets the client's
    # delayed ACK and every response waits ~40 ms (asyncio only sets it for IPPROTO_TCP).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def run(serving: Serving, ledger: Ledger, sock: socket.socket, workers: int) -> None:
    """Serve on `sock` until interrupted: `ledger` itself when `workers` is 1; otherwise it
    is closed (it only proved that the store and the log key open) and N workers each open
    their own."""
    import uvicorn

    if workers == 1:
        config = uvicorn.Config(serving.app(ledger), log_level="warning", lifespan="off")
        uvicorn.Server(config).run(sockets=[sock])
        return
    ledger.close()
    supervise(serving, sock, workers)


def supervise(serving: Serving, sock: socket.socket, workers: int) -> None:
    """uvicorn's supervisor: N workers on `sock`, each replaced if it dies, all stopped on
    SIGINT or SIGTERM. A worker that cannot open the ledger stops them all (exit 1)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    os.environ[ENV_VAR] = serving.to_env()  # spawned workers inherit the environment
    config = uvicorn.Config(
        FACTORY, factory=True, workers=workers, log_level="warning", lifespan="off"
    )
    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise WorkerFailed("a worker could not open the ledger (its error is above), so none serve")


class WorkerFailed(LedgerError):
    """A worker process of `serve --workers N` failed to start."""
