"""The access-audit hook: every API response carrying personal data, and every refused
attempt, goes through one `AccessLog` before the caller hears back.

The servicers only ever call `record_access` and `record_denied` (through their `Call`);
what stands behind them is chosen once, in `ledger.api.server.build_server`: `AuditedAccess`,
which writes granted reads as `AccessRecord.Recorded` events (ledger.audit.access_log) and
refused attempts as `AccessAttempt.Denied` events, both in the ledger's append-only log under
the same tamper evidence as everything else, and raises read-rate alerts.

Nothing recorded here is personal data: principals are staff or service ids, customers are
ids, fields are field names, and the purpose is a short code checked by `check_purpose`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol
from uuid import uuid4

from eventsourcing.domain import Aggregate

from ledger.application import CustomerLedger
from ledger.audit.access_log import DEFAULT_PURPOSE, MAX_CUSTOMERS
from ledger.audit.read_alerts import ReadRateMonitor
from ledger.domain.errors import FieldViolation, ValidationFailed

log = logging.getLogger("ledger.api")

PURPOSE_METADATA = "ledger-purpose"
CUSTOMER_PREFIX = "customers/"
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
        masked: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Called before a response carrying personal data is sent; must be durable when
        it returns (the response is not sent if it raises). `masked`: the fields the data
        policy left out and why; passed only when there are some."""

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


def _nothing() -> None:
    pass


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


class AuthenticationRefusal(Aggregate):
    """Calls refused before anyone was authenticated (missing, malformed, forged, expired or
    revoked credentials), kept as a one-event stream in the ledger's log. One record may
    stand for several refusals from the same peer (`refusals`), so a flood of bad tokens
    costs a bounded number of writes (ledger.api.refusals)."""

    class Refused(Aggregate.Created):
        method: str
        reason: str  # the fixed code the caller got (TOKEN_EXPIRED, CREDENTIALS_REVOKED, ...)
        peer: str  # the caller's address without its port ("ipv4:10.0.0.7")
        # The principal the credential names, only when its signature (or the TLS layer)
        # proved it genuine; "" otherwise. Never the token itself.
        principal: str
        refusals: int  # how many refusals this record stands for (1 unless coalesced)
        personal_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, method: str, reason: str, peer: str, principal: str, refusals: int) -> None:
        self.method = method
        self.reason = reason
        self.peer = peer
        self.principal = principal
        self.refusals = refusals


class AuditedAccess:
    """The access log of the API (the default in `build_server`): every response carrying
    personal data and every refused attempt is recorded, durably, before the caller hears
    back. It is the one place handlers go through; a handler never writes records itself.

    How a handler uses it — through its `Call` (ledger.api.rpc), right before returning:

        call.record_access(customer_ids, fields)
            customer_ids: Sequence[str] — the customers whose personal data the response
                carries, as resource names ("customers/{id}") or bare ids;
            fields: Sequence[str] — the personal field names it carries (e.g. from
                `convert.personal_fields_shown(message)`); when empty nothing is recorded,
                since masked responses carry no personal data.
    List and search responses (ListCustomers, FindDuplicates) go through
    `CustomerAccess.respond_many` (ledger.api.customer_access), which makes one such call
    for the page: every customer whose personal fields are shown, with the union of those
    fields. A command answering with the customer it wrote goes through
    `CustomerAccess.respond_to_command`, which stores the record in the command's own
    transaction (`access_events`).

    They return only when the record is committed and raise when it could not be (the
    handler then fails, so no unrecorded personal data leaves). Principal, method
    ("/ledger.v1.CustomerService/GetCustomer") and purpose (`ledger-purpose` metadata) come
    from the call. Refusals are recorded by the gate (`record_denied`), not by handlers.

    Underneath, `record_access(*, principal, method, customer_ids, fields, purpose)` and
    `record_denied(*, principal, method, customer_ids, reason, purpose)` implement the
    `AccessLog` protocol above. Records go through the ledger's group committer, so N
    concurrent reads cost about one commit between them while each still waits for its own
    record to be durable. Each granted read is also counted by the read-rate monitor
    (ledger.audit.read_alerts); an alert it raises is stored in the same transaction as the
    record that crossed the threshold.
    """

    def __init__(self, ledger: CustomerLedger, monitor: ReadRateMonitor | None = None) -> None:
        self.ledger = ledger
        self.monitor = (
            monitor
            if monitor is not None
            else ReadRateMonitor(
                ledger.settings.read_alert_rate, ledger.settings.read_alert_window_seconds
            )
        )

    def record_access(
        self,
        *,
        principal: str,
        method: str,
        customer_ids: Sequence[str],
        fields: Sequence[str],
        purpose: str,
        masked: Sequence[dict[str, Any]] = (),
    ) -> None:
        events, undo = self.access_events(
            principal=principal,
            method=method,
            customer_ids=customer_ids,
            fields=fields,
            purpose=purpose,
            masked=masked,
        )
        if not events:
            return
        try:
            self._commit(events)
        except BaseException:
            undo()
            raise

    def access_events(
        self,
        *,
        principal: str,
        method: str,
        customer_ids: Sequence[str],
        fields: Sequence[str],
        purpose: str,
        masked: Sequence[dict[str, Any]] = (),
    ) -> tuple[list[Any], Callable[[], None]]:
        """The events that record this access (none when nothing personal is shown), for a
        caller that stores them in the same transaction as its own: a command answering
        with the customer it wrote records that read in the command's commit. Also what
        to call if that transaction fails (a read-rate alert among them is then re-armed:
        the next read past the rate raises it again)."""
        ids = sorted({c.removeprefix(CUSTOMER_PREFIX) for c in customer_ids})
        if not ids or not (fields or masked):
            return [], _nothing
        access_log = self.ledger.access_log
        events: list[Any] = []
        for start in range(0, len(ids), MAX_CUSTOMERS):
            record = access_log.new_record(
                principal,
                purpose or DEFAULT_PURPOSE,
                ids[start : start + MAX_CUSTOMERS],
                fields,
                method=method,
                masked=masked,
            )
            events += record.collect_events()
        alert = self.monitor.observe(principal, ids)
        if alert is None:
            return events, _nothing
        events += alert.collect_events()
        log.warning(
            "read-rate alert: %s read more than %d customers within %gs",
            principal,
            self.monitor.rate,
            self.monitor.window_seconds,
            extra={
                "fields": {
                    "event": "read_rate_alert",
                    "principal": principal,
                    "distinct_customers": alert.distinct_customers,
                    "threshold": self.monitor.rate,
                    "window_seconds": self.monitor.window_seconds,
                }
            },
        )
        return events, lambda: self.monitor.rearm(principal)

    def record_denied(
        self,
        *,
        principal: str,
        method: str,
        customer_ids: Sequence[str],
        reason: str,
        purpose: str,
    ) -> None:
        attempt = AccessAttempt.denied(
            principal=principal,
            method=method,
            customer_ids=[c.removeprefix(CUSTOMER_PREFIX) for c in customer_ids],
            reason=reason,
            purpose=purpose,
        )
        self._commit(attempt.collect_events())

    def record_refused(
        self, *, method: str, reason: str, peer: str, principal: str, refusals: int
    ) -> None:
        """A refused authentication (see `AuthenticationRefusal`)."""
        refusal = AuthenticationRefusal(method, reason, peer, principal, refusals)
        self._commit(refusal.collect_events())

    def _commit(self, events: Sequence[Any]) -> None:
        """Durable when it returns: the ledger's group committer (shared transactions)."""
        self.ledger.access_log.commit(events)
