"""Recording consents: given (to one purpose or a bundle of purposes in one act) and
withdrawn, each an event in the customer's own stream, so consents have the same history,
tamper evidence and replay as everything else about the customer.

A consent names a purpose of the current data policy that rests on consent (anything else
is refused, naming the field: a typo must not record a consent nobody asked for). Its
source is codes only: the channel (`web`, `import`, `call-centre`), the form or its
version (`signup-v3`), a reference to the proof kept elsewhere (`ticket:4711`). Free text
could hold personal data in the clear; these codes cannot.

PIPL Art. 29 and 39 ask for a separate consent for sensitive data and cross-border
transfer: a purpose whose policy entry says `separate_consent` is refused in a bundle and
must be consented to on its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from ledger.application import CustomerLedger
from ledger.consent.records import ConsentEntry, read_history
from ledger.domain.customer import Customer
from ledger.domain.errors import CustomerNotFound, FieldViolation, ValidationFailed
from ledger.policy.model import Policy
from ledger.policy.source import PolicySource, policy_for

_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,99}")
CODE_RULE = "must be a code: A-Z a-z 0-9 _ . : / @ - (at most 100 characters), no free text"


@dataclass(frozen=True)
class ConsentSource:
    """Where a consent came from, as codes (see the module's docstring)."""

    channel: str
    form: str = ""
    proof: str = ""


def source_violations(source: ConsentSource, prefix: str = "") -> list[FieldViolation]:
    violations = []
    for name, value, required in (
        ("source", source.channel, True),
        ("form", source.form, False),
        ("proof", source.proof, False),
    ):
        if (value or required) and not (isinstance(value, str) and _CODE.fullmatch(value)):
            violations.append(FieldViolation(f"{prefix}{name}", CODE_RULE))
    return violations


def purpose_violations(
    policy: Policy, version: int, purposes: Sequence[str], field: str = "purpose"
) -> list[FieldViolation]:
    """Why these purposes cannot be consented to in one act (empty: they can)."""
    if not purposes:
        return [FieldViolation(field, "name at least one purpose of the data policy")]
    violations = []
    named = len(purposes) > 1
    for index, key in enumerate(purposes):
        where = f"{field}[{index}]" if named else field
        purpose = policy.purpose(key) if isinstance(key, str) else None
        if purpose is None:
            violations.append(
                FieldViolation(where, f"not a purpose of the data policy (version {version})")
            )
        elif not purpose.needs_consent:
            violations.append(
                FieldViolation(where, f"rests on {purpose.lawful_basis.value}, not on consent")
            )
        elif purpose.separate_consent and named:
            violations.append(FieldViolation(where, "needs a separate consent: give it on its own"))
        if purposes.count(key) > 1 and purposes.index(key) != index:
            violations.append(FieldViolation(where, "named twice"))
    return violations


class ConsentService:
    def __init__(self, ledger: CustomerLedger, policy: PolicySource | None = None) -> None:
        self.ledger = ledger
        self.policy = policy if policy is not None else policy_for(ledger)

    def check(self, purposes: Sequence[str], source: ConsentSource, prefix: str = "") -> None:
        """Raise ValidationFailed naming every bad field; nothing is written."""
        version, policy = self.policy.current()
        violations = purpose_violations(policy, version, purposes, f"{prefix}purpose")
        violations += source_violations(source, prefix)
        if violations:
            raise ValidationFailed(violations)

    def give(
        self,
        customer_id: UUID,
        purposes: Sequence[str],
        source: ConsentSource,
        *,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> list[ConsentEntry]:
        """One event per purpose, all in one transaction; returns them as recorded."""
        self.check(purposes, source)

        def decide(customer: Customer) -> None:
            give_all(customer, purposes, source, actor=actor, reason=reason)

        self.ledger.run_command(
            customer_id,
            decide,
            actor=actor,
            reason=reason,
            expected_version=expected_version,
            with_keys=True,
        )
        return self.history(customer_id)[-len(purposes) :]

    def withdraw(
        self,
        customer_id: UUID,
        purpose: str,
        *,
        channel: str,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> bool:
        """False when there was no consent in force (nothing written). Any purpose the
        customer ever consented to may be withdrawn, even one a later policy dropped."""
        violations = source_violations(ConsentSource(channel))
        if not isinstance(purpose, str) or not _CODE.fullmatch(purpose):
            violations.insert(0, FieldViolation("purpose", CODE_RULE))
        if violations:
            raise ValidationFailed(violations)
        withdrawn: list[bool] = []

        def decide(customer: Customer) -> None:
            withdrawn.append(
                customer.withdraw_consent(purpose, channel=channel, actor=actor, reason=reason)
            )

        self.ledger.run_command(
            customer_id,
            decide,
            actor=actor,
            reason=reason,
            expected_version=expected_version,
            with_keys=True,
        )
        return withdrawn[0]

    def history(self, customer_id: UUID) -> list[ConsentEntry]:
        """Every consent event of the customer, oldest first (CustomerNotFound if none)."""
        if not self.ledger.recorder.select_events(customer_id, limit=1):
            raise CustomerNotFound(customer_id)
        return read_history(self.ledger, customer_id)


def give_all(
    customer: Customer,
    purposes: Sequence[str],
    source: ConsentSource,
    *,
    actor: str,
    reason: str | None,
) -> None:
    """The checked consents of one act, as events on `customer` (also used by the import,
    which records them with the registration)."""
    for purpose in purposes:
        customer.give_consent(
            purpose,
            channel=source.channel,
            form=source.form,
            proof=source.proof,
            bundle=list(purposes),
            actor=actor,
            reason=reason,
        )
