"""Commands of the chipledger CLI kept in their own module; `register` adds them to the app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app` (none yet)."""
