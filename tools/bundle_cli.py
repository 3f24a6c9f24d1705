"""`chipledger export-bundle` and `chipledger verify`: evidence bundles (PROTOCOL.md section 9).

`export-bundle` reads the store directly with the log key file, and writes what
`GET /v1/bundles/batches/{id}` answers. `verify` checks a bundle with no server and no
database against the log's verifier key, which it never takes from the bundle; it prints one
line per check, the lineage's state as replayed, and a summary, and exits 0 only if every
check holds (1 otherwise, 2 on a malformed key).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ledger.errors import LedgerError, NotFound
from ledger.notes import parse_verifier_key
from ledger.signing import is_file, read_signer

DEFAULT_STORE = "./var/chipledger.db"  # as tools.cli, which imports this module
DEFAULT_LOG_KEY = Path("./var/log.key")


def export_bundle(
    batch: Annotated[str, typer.Argument(metavar="BATCH", help="The batch id.")],
    store: Annotated[
        str, typer.Option("--store", help="SQLite file path or postgresql:// URL of the ledger.")
    ] = DEFAULT_STORE,
    log_key: Annotated[
        Path, typer.Option("--log-key", help="The log key file, to sign head statements.")
    ] = DEFAULT_LOG_KEY,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the bundle here, not to standard output.")
    ] = None,
) -> None:
    """Write the evidence bundle of BATCH: its lineage's entries and every entry they depend
    on, each with an inclusion proof, the checkpoint, and a signed head statement per batch."""
    from ledger.application import Ledger

    ledger = Ledger(store)
    try:
        ledger.use_log_key(read_signer(log_key))  # refuses a key that is not the ledger's
        bundle = ledger.bundle(batch)
    finally:
        ledger.close()
    text = json.dumps(bundle.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote the bundle of {batch} ({len(bundle.entries)} entries) to {out}")


def verify(
    bundle_file: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="The bundle, JSON ('-' for stdin).")
    ],
    log_key: Annotated[
        str,
        typer.Option(
            "--log-key", help="The log's verifier key (GET /v1/log/key), or a file holding it."
        ),
    ],
) -> None:
    """Check an evidence bundle offline: every signature, proof, head statement and `prev`
    link, and a replay of the custody state machine. Exit 0 only if everything holds."""
    from ledger.verify import verify_bundle

    vkey = _verifier_key(log_key)
    report = verify_bundle(_read(bundle_file), vkey)
    for check in report.checks:
        typer.echo(f"{'ok' if check.ok else 'FAIL':<5} {check.what}: {check.detail}")
    for state in report.batches:
        typer.echo(f"      {state.sentence()}")
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


def _verifier_key(text_or_path: str) -> str:
    """The verifier key text: read from the file if that path exists, else the text itself."""
    path = Path(text_or_path)
    text = path.read_text("utf-8").strip() if is_file(path) else text_or_path.strip()
    try:
        parse_verifier_key(text)
    except LedgerError as exc:
        raise typer.BadParameter(exc.message, param_hint="--log-key") from None
    return text


def _read(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    if not path.is_file():
        raise NotFound(f"no file at {path}")
    return path.read_bytes()


def register(app: typer.Typer) -> None:
    """Add `export-bundle` and `verify` to `app`."""
    app.command("export-bundle")(export_bundle)
    app.command("verify")(verify)
