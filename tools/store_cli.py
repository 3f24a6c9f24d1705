"""`chipledger rebuild`: recompute a store's read models from its log, offline
(PROTOCOL.md section 10). The rebuild itself is `ledger.rebuild`."""

# No `from __future__ import annotations`: typer reads the command's annotations, and they
# name `StoreOpt`, imported inside `register`.
import time

import typer


def register(app: typer.Typer) -> None:
    """Add `rebuild` to `app`."""
    from tools.cli import DEFAULT_STORE, StoreOpt  # tools.cli imports this module first

    @app.command("rebuild")
    def rebuild_command(store: StoreOpt = DEFAULT_STORE) -> None:
        """Recompute the read models (allocations, serials, flags, counters, their history)
        from the log, and restore any stored hash of the tree that was lost. Run it with no
        server writing to the store; the log is not changed."""
        from ledger.application import Ledger

        ledger = Ledger(store)
        if not ledger.initialised:
            ledger.info  # noqa: B018 (raises NotFound: "run `chipledger init` first")
        started = time.perf_counter()
        size = ledger.rebuild_read_models()
        seconds = time.perf_counter() - started
        typer.echo(f"rebuilt the read models of {store} from {size:,} entries in {seconds:.1f} s")
        ledger.close()
