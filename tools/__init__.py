"""The `chipledger` command: a thin adapter over `ledger` (PROTOCOL.md section 10)."""
