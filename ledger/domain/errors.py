"""Errors a caller can act on.

Every message here may reach a log or an API response, so none of them ever carries a
personal value: they name fields and reasons, and customer ids at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


class LedgerError(Exception):
    """Base of the errors that are the caller's to fix (not bugs, not outages)."""


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` uses the public snake_case names (``emails[1]``,
    ``addresses[0].country``, ``external_id:CRM``)."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ValidationFailed(LedgerError):
    """A command was refused before anything was written; lists every bad field at once
    so a caller can fix its input in one round."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = list(violations)
        super().__init__("invalid input: " + "; ".join(str(v) for v in self.violations))


class CustomerNotFound(LedgerError):
    def __init__(self, customer_id: UUID | str) -> None:
        self.customer_id = customer_id
        super().__init__(f"customer {customer_id} not found")


class CustomerErasedError(LedgerError):
    """Commands on an erased customer are refused: its key is gone for good
    (re-registering the person creates a new customer with a new key)."""

    def __init__(self, customer_id: UUID) -> None:
        self.customer_id = customer_id
        super().__init__(f"customer {customer_id} has been erased; no further changes are allowed")


class StaleVersion(LedgerError):
    """Optimistic concurrency: the caller decided on an older version than the stored one."""

    def __init__(self, customer_id: UUID, expected: int, actual: int) -> None:
        self.customer_id = customer_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"customer {customer_id} is at version {actual}, not the expected version {expected}; "
            "re-read it and retry"
        )


class HistoryNotFound(LedgerError):
    """An as-of query asked for a point before the customer existed."""


class CustomerMergedError(LedgerError):
    """A customer merged into another one takes no changes: its data lives on in the
    survivor, which is where changes go (or unmerge it first)."""

    def __init__(self, customer_id: UUID, target_id: UUID | str) -> None:
        self.customer_id = customer_id
        self.target_id = target_id
        super().__init__(
            f"customer {customer_id} has been merged into {target_id}; "
            "change that customer instead, or unmerge this one first"
        )


class MergeRefused(LedgerError):
    """A merge, an unmerge, or an erasure that would break a merge, is not possible as
    asked; the message says why and what to do (ids only)."""


class ConcurrentChange(MergeRefused):
    """A merge or unmerge lost a race: one of its customers changed between reading and
    writing. Nothing was written; reading both again and retrying is safe."""


class LikelyDuplicate(LedgerError):
    """Registration refused (LEDGER_DUPLICATE_POLICY=refuse): the new customer is probably
    one the ledger already has. Names the existing customers' ids and scores, never a value."""

    def __init__(self, matches: list[tuple[str, float]]) -> None:
        self.matches = matches
        listed = ", ".join(f"{customer_id} ({score:.2f})" for customer_id, score in matches)
        super().__init__(f"likely a duplicate of {listed}; nothing was registered")


class CustomerOnHold(LedgerError):
    """A legal hold keeps the customer's data as it is: no erasure, no retention
    destruction, until the hold is released (`ledger hold release`). The message names the
    customer id only; the hold's reason code is in the customer's history."""

    def __init__(self, customer_id: UUID) -> None:
        self.customer_id = customer_id
        super().__init__(
            f"customer {customer_id} is under a legal hold; release the hold before erasing "
            "or destroying its data"
        )


class HoldRefused(LedgerError):
    """A hold command that does not fit the customer's state (releasing a hold that is not
    there)."""
