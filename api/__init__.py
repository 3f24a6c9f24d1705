"""The HTTP adapter of chipledger: `create_app(ledger)` gives the FastAPI application."""

from api.app import create_app

__all__ = ["create_app"]
