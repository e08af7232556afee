"""Tamper evidence for the ledger's history (DESIGN "Audit invariants").

* `merkle` — RFC 6962/9162 tree arithmetic (pure);
* `leaf` — the fixed binary encoding of one stored event as a Merkle leaf;
* `recorders` — the event store's recorders, appending leaves in the events' transaction;
* `storage` — the audit tables on SQLite and PostgreSQL, and a key-less read view of them;
* `leaf_mac` — each leaf's MAC, proof that the ledger (not the database) appended it;
* `tree_heads` — signed tree heads, when they are issued and what the signer refuses;
* `publication` — the append-only file every signed head is published to;
* `head_signer` — the background thread that signs on a timer and every N events;
* `proofs` — inclusion and consistency proof documents;
* `access_log` — reads of personal data, recorded as events in the same log;
* `history` — one field's history for one customer;
* `verifier` — the independent one-pass verifier behind `ledger verify`;
* `client_check` — a standalone copy of the checks for auditors (imports nothing of ours).
"""
