"""Starts the ledger's gRPC server: configuration from LEDGER_* variables, wiring in
`ledger.api.server` (the same as `ledger serve`)."""

import sys

from ledger.api.server import main

if __name__ == "__main__":
    sys.exit(main())
