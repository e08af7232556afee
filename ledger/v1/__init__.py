"""Generated from protos/ledger/v1 by `python -m ledger.api.codegen`. Do not edit."""
