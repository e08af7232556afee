"""Ledger: an event-sourced, audit-first customer ledger with per-customer crypto-shredding."""
