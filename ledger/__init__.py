"""chipledger's domain and its one application service.

Imports no web or command-line framework: `api/` and `tools/` are adapters over `Ledger`.
"""
