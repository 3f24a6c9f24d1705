"""`chipledger`: keys, a new ledger, serving it, signing and submitting envelopes, the demo.

`main(argv) -> int` is the entry point; ledger errors become one sentence on standard error
and exit 1, usage errors exit 2 (PROTOCOL.md section 10). Every command calls the same ledger
methods as the HTTP API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ledger.canonical import canonical, parse_json
from ledger.crypto import Signer
from ledger.errors import Conflict, LedgerError, NotFound
from ledger.signing import envelope, read_public_key, read_signer, write_key_pair, write_secret
from tools import audit_cli, bundle_cli, store_cli

DEFAULT_STORE = "./var/chipledger.db"
DEFAULT_LOG_KEY = Path("./var/log.key")
DEFAULT_ORIGIN = "chipledger.local/ledger"

app = typer.Typer(
    name="chipledger",
    help=(
        "A signed custody ledger for export-controlled AI chips.\n\n"
        "Start here: `chipledger keygen bis --dir keys`, then "
        "`chipledger init --store var/chipledger.db --authority-key keys/bis.pub`, then "
        "`chipledger serve --store var/chipledger.db`. `make run` does all of it with demo data."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StoreOpt = Annotated[
    str, typer.Option("--store", help="SQLite file path or postgresql:// URL of the ledger.")
]


@app.command()
def keygen(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Key name: writes NAME.key and NAME.pub.")
    ],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the files.")] = Path("."),
) -> None:
    """Make an Ed25519 key pair: DIR/NAME.key (secret seed, mode 0600) and DIR/NAME.pub.

    Prints the key id (SHA-256 of the public key) that envelopes name in `keyid`.
    """
    signer = write_key_pair(directory, name)
    typer.echo(signer.key_id)


@app.command()
def init(
    authority_key: Annotated[
        str, typer.Option("--authority-key", help="The trust root: a .pub file or base64 key.")
    ],
    store: StoreOpt = DEFAULT_STORE,
    origin: Annotated[str, typer.Option(help="The ledger's origin (log name).")] = DEFAULT_ORIGIN,
    log_key: Annotated[
        Path, typer.Option("--log-key", help="Where to write the ledger's log key.")
    ] = DEFAULT_LOG_KEY,
) -> None:
    """Create an empty ledger whose trust root is the authority key, and its log key.

    Refuses to touch a store that already holds a ledger or an existing log key file.
    The first event the ledger accepts must be that authority's own party.registered.
    """
    from ledger.application import Ledger

    public = read_public_key(authority_key)
    ledger = Ledger(store)
    if ledger.initialised:
        raise Conflict(f"{store} already holds a ledger; it is never re-initialised")
    if log_key.exists():
        raise Conflict(f"{log_key} exists; choose another --log-key path or remove it")
    signer = Signer.generate()
    write_secret(log_key, signer)
    ledger.initialise(origin, public, signer.public_key)
    typer.echo(f"initialised {origin} in {store}; log key {ledger.info.log_key}")


@app.command()
def serve(
    store: StoreOpt = DEFAULT_STORE,
    log_key: Annotated[Path, typer.Option("--log-key", help="The log key file.")] = (
        DEFAULT_LOG_KEY
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    open_reads: Annotated[
        bool, typer.Option("--open-reads", help="Serve reads without tokens (local demo).")
    ] = False,
    session_minutes: Annotated[
        int, typer.Option(min=1, help="How long a read token from POST /v1/sessions lasts.")
    ] = 60,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes sharing the socket, each its own ledger.")
    ] = 1,
) -> None:
    """Serve the ledger's HTTP API (PROTOCOL.md section 6). `--port 0` picks a free port.

    Prints `listening on http://HOST:PORT` on standard error once the socket accepts
    connections, then serves until interrupted. Several servers, or `--workers N`, may serve
    one store: the store serializes their writes (docs/operations.md).
    """
    from tools.serving import Serving, bind, shown
    from tools.serving import run as run_server

    serving = Serving(store, str(log_key), open_reads, session_minutes)
    ledger = serving.open()  # refuses a store without a ledger, or a key that is not its own
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    entries = f"{ledger.size()} entries in {shown(store)}"
    typer.echo(f"chipledger {ledger.info.origin}: {entries}", err=True)
    typer.echo(f"OpenAPI docs on http://{host}:{bound}/docs", err=True)
    typer.echo(f"listening on http://{host}:{bound}", err=True)
    run_server(serving, ledger, sock, workers)


@app.command()
def sign(
    event_file: Annotated[Path, typer.Argument(help="The event object, JSON ('-' for stdin).")],
    key: Annotated[list[Path], typer.Option("--key", help="A .key file; repeat to co-sign.")],
) -> None:
    """Sign an event: print its DSSE envelope (canonical JSON) over the RFC 8785 bytes."""
    event = parse_json(_read(event_file), str(event_file))
    if not isinstance(event, dict):
        raise typer.BadParameter("the event file must hold one JSON object")
    typer.echo(canonical(envelope(event, [read_signer(k) for k in key])).decode())


@app.command()
def submit(
    files: Annotated[list[Path], typer.Argument(help="Envelope files ('-' for stdin).")],
    url: Annotated[str, typer.Option(help="The ledger's base URL.")] = "http://127.0.0.1:8000",
) -> None:
    """Send envelopes to a ledger; print each receipt. Exit 1 on the first refusal."""
    import httpx

    with httpx.Client(base_url=url, timeout=30) as client:
        for path in files:
            try:
                response = client.post("/v1/events", content=_read(path))
            except httpx.HTTPError as exc:
                raise Refused(f"cannot reach the ledger at {url} ({exc}); is it serving?") from None
            if response.status_code >= 300:
                raise Refused(f"{path}: {_error_text(response)}")
            typer.echo(json.dumps(response.json()))


@app.command()
def session(
    key: Annotated[Path, typer.Option("--key", help="A .key file of the party asking.")],
    party: Annotated[
        str | None, typer.Option(help="The party asking (default: the key file's name).")
    ] = None,
    url: Annotated[str, typer.Option(help="The ledger's base URL.")] = "http://127.0.0.1:8000",
) -> None:
    """Ask the ledger for a read token: sign a fresh session.requested event with KEY and
    print the token alone (for scripts); its party and expiry go to standard error."""
    import uuid
    from datetime import UTC, datetime

    import httpx

    from ledger.wire import format_time

    signer = read_signer(key)
    actor = party or key.stem
    with httpx.Client(base_url=url, timeout=30) as client:
        try:
            origin = client.get("/v1/ledger").json()["origin"]
            event = {"type": "session.requested", "id": str(uuid.uuid4()), "ledger": origin,
                     "actor": actor, "at": format_time(datetime.now(UTC))}  # fmt: skip
            response = client.post("/v1/sessions", json=envelope(event, [signer]))
        except httpx.HTTPError as exc:
            raise Refused(f"cannot reach the ledger at {url} ({exc}); is it serving?") from None
    if response.status_code >= 300:
        raise Refused(f"no session for {actor!r}: {_error_text(response)}")
    body = response.json()
    typer.echo(body["token"])
    typer.echo(f"a token for {body['party']}, until {body['expires_at']}", err=True)


@app.command()
def demo(
    store: StoreOpt = DEFAULT_STORE,
    directory: Annotated[Path, typer.Option("--dir", help="Where demo keys live.")] = Path("var"),
) -> None:
    """Create a ledger with demo parties, keys and sites, unless the store already has one."""
    from tools.demo import load_demo

    typer.echo(load_demo(store, directory))


@app.command()
def schemas(
    out: Annotated[Path, typer.Option("--out", help="Directory for the schema files.")] = Path(
        "schemas"
    ),
) -> None:
    """Write the JSON Schemas of the envelope and every event type into OUT."""
    from tools.schemagen import write_schemas

    for path in write_schemas(out):
        typer.echo(path)


@app.command()
def bench(
    count: Annotated[
        int | None,
        typer.Option(min=1, help="Envelopes per ingest run (20,000; 2,000 with --quick)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="2,000 envelopes and 10,000 batches: about 1 minute.")
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(help="A directory for the SQLite files, or a postgresql:// URL (schemas)."),
    ] = None,
    profile: Annotated[
        bool, typer.Option("--profile", help="Also profile batched ingest with cProfile.")
    ] = False,
    scale: Annotated[
        int | None,
        typer.Option(
            min=100,
            help="Instead: build ledgers of N entries and of --baseline, and measure serve's "
            "start, RSS and reads (now, as_of a seq, as_of a time) and the audit of each.",
        ),
    ] = None,
    baseline: Annotated[
        int, typer.Option(min=100, help="With --scale: the size N is compared with.")
    ] = 10_000,
    reads: Annotated[
        int | None,
        typer.Option(min=1, help="With --scale: requests per read (200; 30 with --quick)."),
    ] = None,
) -> None:
    """Measure ingest against PyNaCl's verify rate, and allocation cost as the ledger grows;
    with --scale N, reads, start, memory and audit at N entries against 10,000.

    Prints a table (value, ratio, target, pass/fail); progress goes to standard error.
    Exit 1 when a target is missed. The default run takes about 4 minutes on two cores.
    """
    from tools.bench import run as run_bench
    from tools.bench_scale import run as run_scale

    if scale is not None:
        scaled = run_scale(scale=scale, baseline=baseline, store=store, reads=reads, quick=quick)
        typer.echo(scaled.text())
        if not scaled.passed:
            raise typer.Exit(1)
        return
    report = run_bench(count=count, quick=quick, store=store, profile=profile)
    typer.echo(report.text())
    if not report.passed:
        raise typer.Exit(1)


class Refused(LedgerError):
    """The ledger refused an envelope sent by `submit`."""


bundle_cli.register(app)  # export-bundle, verify
audit_cli.register(app)  # audit
store_cli.register(app)  # rebuild


def _read(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    if not path.is_file():
        raise NotFound(f"no file at {path}")
    return path.read_bytes()


def _error_text(response: object) -> str:
    import httpx

    assert isinstance(response, httpx.Response)
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 1 refused or failed, 2 usage)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="chipledger", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return 1
    except typer.TyperException as exc:  # usage errors: bad options, missing arguments
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"chipledger: {exc}", err=True)
        return 2
    except LedgerError as exc:
        typer.echo(f"chipledger: {exc.message}", err=True)
        return 1
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
