"""The access-audit hook: every API response carrying personal data, and every refused
attempt, goes through one `AccessLog` before the caller hears back.

The servicers only ever call `record_access` and `record_denied`; what stands behind them is
chosen once, in `ledger.api.server.build_server`. For now `LogDeniedAttempts` writes refused
attempts as `AccessAttempt.Denied` events through the application (so they sit in the
ledger's append-only log, under the same tamper evidence as everything else) and leaves
granted reads to the audit log that replaces it.

Nothing recorded here is personal data: principals are staff or service ids, customers are
ids, fields are field names, and the purpose is a short code checked by `check_purpose`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol
from uuid import uuid4

from eventsourcing.domain import Aggregate

from ledger.application import CustomerLedger
from ledger.domain.errors import FieldViolation, ValidationFailed

PURPOSE_METADATA = "ledger-purpose"
_PURPOSE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")


def check_purpose(purpose: str) -> str:
    """The declared purpose is stored readable, so it must be a code, not a sentence that
    could name a person."""
    if purpose and not _PURPOSE.fullmatch(purpose):
        raise ValidationFailed(
            [
                FieldViolation(
                    PURPOSE_METADATA,
                    "must be a purpose code (A-Z a-z 0-9 _ . : / -, at most 64 characters)",
                )
            ]
        )
    return purpose


class AccessLog(Protocol):
    def record_access(
        self,
        *,
        principal: str,
        method: str,
        customer_ids: Sequence[str],
        fields: Sequence[str],
        purpose: str,
    ) -> None:
        """Called before a response carrying personal data is sent; must be durable when
        it returns (the response is not sent if it raises)."""

    def record_denied(
        self,
        *,
        principal: str,
        method: str,
        customer_ids: Sequence[str],
        reason: str,
        purpose: str,
    ) -> None:
        """Called before PERMISSION_DENIED is sent."""


class AccessAttempt(Aggregate):
    """One refused API call, kept as a one-event stream in the ledger's log."""

    class Denied(Aggregate.Created):
        principal: str
        method: str
        customer_ids: list[str]
        reason: str
        purpose: str
        # Declared for the encrypting mapper (which refuses undeclared events): none of
        # these attributes is personal data.
        personal_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, principal: str, method: str, customer_ids: list[str], reason: str, purpose: str
    ) -> None:
        self.principal = principal
        self.method = method
        self.customer_ids = customer_ids
        self.reason = reason
        self.purpose = purpose

    @classmethod
    def denied(cls, **attributes: Any) -> AccessAttempt:
        return cls._create(cls.Denied, id=uuid4(), **attributes)


class LogDeniedAttempts:
    """The interim access log: refused attempts as events; granted reads not yet recorded."""

    def __init__(self, ledger: CustomerLedger) -> None:
        self.ledger = ledger

    def record_access(
        self,
        *,
        principal: str,
        method: str,
        customer_ids: Sequence[str],
        fields: Sequence[str],
        purpose: str,
    ) -> None:
        """Granted reads are recorded by the audit log (issue 3), which replaces this class."""

    def record_denied(
        self,
        *,
        principal: str,
        method: str,
        customer_ids: Sequence[str],
        reason: str,
        purpose: str,
    ) -> None:
        self.ledger.save(
            AccessAttempt.denied(
                principal=principal,
                method=method,
                customer_ids=list(customer_ids),
                reason=reason,
                purpose=purpose,
            )
        )
