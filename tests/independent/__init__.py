"""An independent chipledger client, written from PROTOCOL.md alone (no project imports)."""
