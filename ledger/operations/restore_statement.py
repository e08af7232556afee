"""Restore statements: a signed record, in the publication file, that the databases were
restored to an earlier size of the log (`ledger restore` calls `record_restore`)."""

from __future__ import annotations

from ledger.audit import client_check
from ledger.audit.publication import PublishedHeads
from ledger.audit.restores import RestoreStatement
from ledger.config import Settings
from ledger.crypto_shred.journal import JournalStatus, journal_status
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.text import storable_violations
from ledger.signing import LedgerSigner

__all__ = ["JournalStatus", "RestoreStatement", "journal_status", "record_restore"]

MAX_REASON = 500


def record_restore(
    settings: Settings, signer: LedgerSigner, restored_size: int, reason: str
) -> RestoreStatement:
    """Append a signed restore statement to the publication file: the databases now hold
    the log as it was at `restored_size` events. Call it after restoring and before the
    ledger next opens; the signer then signs new heads from the newest published head at
    or below that size, and `ledger verify` reports the restore as information."""
    violations = storable_violations((("reason", reason),))
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        violations.append(
            FieldViolation("reason", f"must be a non-empty text of at most {MAX_REASON} characters")
        )
    if isinstance(restored_size, bool) or not isinstance(restored_size, int) or restored_size < 0:
        violations.append(FieldViolation("restored_size", "must be a whole number (0 or more)"))
    if violations:
        raise ValidationFailed(violations)
    published = PublishedHeads(settings.resolved_tree_head_file)
    with published.locked() as file:
        last = file.latest(signer.public_key_pem())
        size, root = (0, client_check.EMPTY_ROOT)
        if last is not None:
            size, root = last.tree_size, last.root_hash
        statement = RestoreStatement.issue(restored_size, size, root, reason, signer)
        file.append_json(statement.to_json())
    return statement
