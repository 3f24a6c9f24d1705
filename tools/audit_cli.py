"""`chipledger audit`: re-verify a whole store (PROTOCOL.md section 10), with a progress bar on
a terminal, then a summary and every problem found. The audit itself is `ledger.audit`."""

# No `from __future__ import annotations`: typer reads the command's annotations, and they
# name `StoreOpt`, imported inside `register`.
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from ledger.audit_report import LISTED, AuditReport, Progress

ScratchOpt = Annotated[
    str | None,
    typer.Option(
        "--scratch",
        metavar="DIR",
        help="Where the audit keeps its temporary files (the rebuild, the recomputed tree), "
        "removed at the end (default: the system's temporary directory).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add `audit` to `app`."""
    from tools.cli import DEFAULT_STORE, StoreOpt  # tools.cli imports this module first

    @app.command("audit")
    def audit_command(
        store: StoreOpt = DEFAULT_STORE,
        log_key: Annotated[
            str | None,
            typer.Option(
                "--log-key",
                help="The log's .key file, or its verifier key (text or file). Without it the "
                "key the store records is trusted.",
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(min=0, help="Processes that verify envelopes (default: one per core)."),
        ] = None,
        allow_uncovered: Annotated[
            bool,
            typer.Option(
                "--allow-uncovered",
                help="Accept entries no checkpoint covers yet (written without the log key).",
            ),
        ] = False,
        scratch: ScratchOpt = None,
    ) -> None:
        """Re-verify the whole ledger: every signature against the keys valid when it was
        accepted, every prev link, leaf and checkpoint, and the state rebuilt from the entries.

        Prints every problem and the first bad seq; exit 1 when anything does not hold.
        """
        from ledger.audit import audit  # here: a server never imports the audit's modules

        with _progress() as shown:
            report = audit(
                store, log_key, shown, workers, allow_uncovered=allow_uncovered, scratch=scratch
            )
        typer.echo(summary(report))
        if not report.ok:
            raise typer.Exit(1)


def summary(report: AuditReport) -> str:
    """What the audit checked, how fast, and each problem, by seq."""
    seconds = report.seconds
    names = ("entries", "rebuild", "tree", "checkpoints", "compare")
    phases = ", ".join(f"{name} {seconds[name]:.2f} s" for name in names if name in seconds)
    trusted = " (read from the store, so trusted: give --log-key to check it)"
    lines = [
        f"audited {report.store}: {report.entries:,} entries, {report.signatures:,} signatures "
        f"verified, {report.checkpoints:,} checkpoints, {report.stored_events:,} stored events "
        "compared with the rebuild",
        f"{report.cores} usable cores, {report.workers} worker processes; "
        f"{seconds.get('total', 0.0):.2f} s ({phases}), {report.rate:,.0f} entries/s",
        f"log key {report.log_key}{trusted if report.log_key_from_store else ''}",
    ]
    if report.covered < report.entries and "checkpoint" not in report.counts:
        lines.append(f"no good checkpoint covers the entries from seq {report.covered} on; "
                     "a ledger holding the log key signs one when asked for it")  # fmt: skip
    if report.ok:
        return "\n".join([*lines, "everything holds"])
    first = "none" if report.first_bad_seq is None else report.first_bad_seq
    lines.append(f"{sum(report.counts.values())} problems; the first bad seq: {first}")
    for problem in sorted(report.problems, key=lambda p: math.inf if p.seq is None else p.seq):
        lines.append(f"  {problem.where}: {problem.what}: {problem.message}")
    if report.unlisted:
        lines.append(f"  and {report.unlisted} more (the first {LISTED} of each kind are listed)")
    return "\n".join(lines)


@contextmanager
def _progress() -> Iterator[Progress | None]:
    """A bar per phase on standard error when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bars

    columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Bars(*columns, console=Console(stderr=True), transient=True) as bars:
        tasks = {}

        def show(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=total)
            bars.update(tasks[phase], completed=done, total=total)

        yield show
