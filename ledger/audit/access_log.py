"""The access log: one record per read of personal data (who, why, which customers, which
fields, when), kept as events in the ledger's own notification log.

Being ordinary events, access records get a Merkle leaf in the same transaction as they are
stored, so they are covered by the same tree, tree heads, proofs and verifier as the
customers' history — no second tamper-evidence mechanism, and the log is append-only for the
same reasons. A record holds no personal data: customer ids, field *names*, the principal
and a purpose code.

A read is recorded after the data was loaded and before it is returned, so a caller never
receives personal data whose read is not on record (a failed record fails the read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.text import storable_violations

if TYPE_CHECKING:
    from eventsourcing.application import Application

# The purpose of a read that declares none (CLI without --purpose, API without the
# `ledger-purpose` metadata): serving the customer under contract, which every principal
# holds and whose fields the default policy all allows (`ledger.consent.basis`).
DEFAULT_PURPOSE = "essential.service"
MAX_LABEL = 200
MAX_CUSTOMERS = 10_000
PAGE = 1_000


class AccessRecord(Aggregate):
    """One read of personal data. Its own one-event aggregate, so recording a read never
    contends with writes to the customers it names."""

    class Recorded(Aggregate.Created):
        principal: str
        purpose: str
        customer_ids: list[str]
        fields: list[str]
        # The API method that returned the data ("/ledger.v1.CustomerService/GetCustomer"),
        # or "cli:<command>"; records written before it existed read as "".
        method: str
        # The operating-system account that ran a CLI read (what the OS vouches for, while
        # the principal is whatever --actor / LEDGER_ACTOR said); "" for API reads and for
        # records written before it existed.
        os_user: str
        # The fields the answer left out under the data policy, and why (fixed reason
        # codes, `ledger.consent.basis`): [{"field", "reason", "customer_ids"?}]; a
        # `customer_ids` list when the mask applied to some of the read's customers only.
        # Records written before purpose-bound reads read as [].
        masked: list[dict[str, Any]]
        personal_attributes: ClassVar[tuple[str, ...]] = ()
        class_version: ClassVar[int] = 4

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["method"] = ""

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["os_user"] = ""

        @staticmethod
        def upcast_v3_v4(state: dict[str, Any]) -> None:
            state["masked"] = []

    def __init__(
        self,
        principal: str,
        purpose: str,
        customer_ids: list[str],
        fields: list[str],
        method: str,
        os_user: str = "",
        masked: list[dict[str, Any]] | None = None,
    ) -> None:
        self.principal = principal
        self.purpose = purpose
        self.customer_ids = customer_ids
        self.fields = fields
        self.method = method
        self.os_user = os_user
        self.masked = list(masked or [])


RECORDED_TOPIC = get_topic(AccessRecord.Recorded)


@dataclass(frozen=True)
class AccessEntry:
    position: int
    record_id: UUID
    at: datetime
    principal: str
    purpose: str
    customer_ids: list[str]
    fields: list[str]
    method: str = ""
    os_user: str = ""
    masked: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "record_id": str(self.record_id),
            "at": self.at.isoformat(),
            "principal": self.principal,
            "os_user": self.os_user,
            "method": self.method,
            "purpose": self.purpose,
            "customer_ids": self.customer_ids,
            "fields": self.fields,
            "masked": self.masked,
        }


def _label(name: str, value: object, violations: list[FieldViolation]) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_LABEL:
        violations.append(
            FieldViolation(name, f"must be a non-empty text of at most {MAX_LABEL} characters")
        )
        return
    violations += storable_violations([(name, value)])  # shown by `ledger access-log`


class AccessLog:
    """Records reads and lists them. Works on any eventsourcing application whose mapper
    stores events without `personal_attributes` in the clear (ours does)."""

    def __init__(
        self,
        app: Application[UUID],
        commit: Callable[[Sequence[Any]], object] | None = None,
    ) -> None:
        """`commit` stores a list of events durably (default: one `save` each call); the
        ledger passes its group committer, so concurrent readers share one transaction."""
        self.app = app
        self.commit: Callable[[Sequence[Any]], object] = commit or (
            lambda events: app.save(*events)
        )

    def record(
        self,
        principal: str,
        purpose: str,
        customer_ids: Iterable[UUID | str],
        fields: Iterable[str],
        *,
        method: str = "",
        os_user: str = "",
        masked: Sequence[dict[str, Any]] = (),
    ) -> UUID:
        """Durable when it returns."""
        record = self.new_record(
            principal, purpose, customer_ids, fields, method=method, os_user=os_user, masked=masked
        )
        self.commit(record.collect_events())
        return record.id

    def new_record(
        self,
        principal: str,
        purpose: str,
        customer_ids: Iterable[UUID | str],
        fields: Iterable[str],
        *,
        method: str = "",
        os_user: str = "",
        masked: Sequence[dict[str, Any]] = (),
    ) -> AccessRecord:
        """A checked record, not yet stored: for callers that commit it together with other
        events (an alert it triggers) in one transaction."""
        violations: list[FieldViolation] = []
        _label("principal", principal, violations)
        _label("purpose", purpose, violations)
        ids = [str(c) for c in customer_ids]
        if not ids or len(ids) > MAX_CUSTOMERS:
            violations.append(
                FieldViolation("customer_ids", f"must name 1 to {MAX_CUSTOMERS} customers")
            )
        if len(method) > MAX_LABEL:
            violations.append(FieldViolation("method", f"at most {MAX_LABEL} characters"))
        if len(os_user) > MAX_LABEL:
            violations.append(FieldViolation("os_user", f"at most {MAX_LABEL} characters"))
        if violations:
            raise ValidationFailed(violations)
        return AccessRecord(
            principal, purpose, ids, sorted(set(fields)), method, os_user, list(masked)
        )

    def entries(
        self,
        *,
        customer_id: UUID | None = None,
        principal: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_position: int = 0,
    ) -> Iterator[AccessEntry]:
        """Access records in log order, filtered. Scans the log's access records (a
        projection can index them when the log grows large)."""
        wanted = str(customer_id) if customer_id is not None else None
        position = after_position
        while True:
            batch = self.app.recorder.select_notifications(
                start=position,
                limit=PAGE,
                topics=[RECORDED_TOPIC],
                inclusive_of_start=False,
            )
            for notification in batch:
                event = self.app.mapper.to_domain_event(notification)
                assert isinstance(event, AccessRecord.Recorded)
                if wanted is not None and wanted not in event.customer_ids:
                    continue
                if principal is not None and event.principal != principal:
                    continue
                if since is not None and event.timestamp < since:
                    continue
                if until is not None and event.timestamp > until:
                    continue
                yield AccessEntry(
                    position=notification.id,
                    record_id=event.originator_id,
                    at=event.timestamp,
                    principal=event.principal,
                    purpose=event.purpose,
                    customer_ids=list(event.customer_ids),
                    fields=list(event.fields),
                    method=event.method,
                    os_user=event.os_user,
                    masked=[dict(m) for m in event.masked],
                )
            if len(batch) < PAGE:
                return
            position = batch[-1].id
