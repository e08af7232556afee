"""The data policy as versions in the ledger's own log.

Every `ledger policy apply` is one event on a single stream (a fixed id), and the stream's
version is the policy's version: two applies racing each other cannot both become version
N (the second gets a conflict and nothing is written). Being ordinary events, versions get
their Merkle leaves in the same transaction, so which policy was in force when is as
tamper-evident as the customers' history, and `ledger verify` covers it.

Version 0 is the shipped default (`ledger/policy/default_policy.toml`): a ledger to which no
policy was ever applied runs under it, and nothing is written for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError
from eventsourcing.utils import get_topic

from ledger.domain.errors import ConcurrentChange, FieldViolation, ValidationFailed
from ledger.domain.text import storable_violations
from ledger.policy.model import Policy, default_policy

if TYPE_CHECKING:
    from eventsourcing.application import Application

MAX_REASON = 500
# One stream for the whole ledger's policy: a fixed, documented id.
POLICY_STREAM_ID = uuid5(UUID("00000000-0000-0000-0000-000000000000"), "ledger.data-policy")


def digest_of(data: dict[str, Any]) -> str:
    """SHA-256 of the policy's canonical JSON: what an auditor compares with a file."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class DataPolicy(Aggregate):
    """The ledger's data policy; each version one event."""

    class Applied(Aggregate.Event):
        policy: dict[str, Any]
        digest: str
        actor: str
        reason: str | None
        personal_attributes: ClassVar[tuple[str, ...]] = ()

        def apply(self, aggregate: DataPolicy) -> None:
            aggregate.policy = self.policy

    class Adopted(Applied, Aggregate.Created):
        """The first version applied (it starts the stream)."""

    def __init__(self, policy: dict[str, Any], digest: str, actor: str, reason: str | None):
        self.policy = policy


APPLIED_TOPICS = (get_topic(DataPolicy.Adopted), get_topic(DataPolicy.Applied))


@dataclass(frozen=True)
class PolicyVersion:
    version: int  # 0: the shipped default, never applied
    policy: Policy
    digest: str
    applied_at: datetime | None
    actor: str | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "digest": self.digest,
            "applied_at": self.applied_at.isoformat() if self.applied_at else None,
            "actor": self.actor,
            "reason": self.reason,
            "policy": self.policy.as_data(),
        }


@cache
def _default_version() -> PolicyVersion:
    """Parsed once per process (checking it against the Fides taxonomy costs ~0.25 s)."""
    policy = default_policy()
    return PolicyVersion(0, policy, digest_of(policy.as_data()), None, None, None)


class PolicyLog:
    """Reads and appends policy versions. `current()` costs one indexed read of the
    stream's last event (no taxonomy check: a stored version was checked when applied)."""

    def __init__(self, app: Application[UUID]) -> None:
        self.app = app
        # The last version decoded: a version's event never changes, so checking the
        # stream's latest version number is enough to reuse it (decoding and validating a
        # policy costs more than the indexed read that finds its version).
        self._cached: PolicyVersion | None = None

    def current(self) -> tuple[int, Policy]:
        latest = self.latest()
        return latest.version, latest.policy

    def latest(self) -> PolicyVersion:
        stored = self.app.recorder.select_events(POLICY_STREAM_ID, desc=True, limit=1)
        if not stored:
            return _default_version()
        cached = self._cached
        if cached is not None and cached.version == stored[0].originator_version:
            return cached
        self._cached = self._version(self.app.mapper.to_domain_event(stored[0]))
        return self._cached

    def versions(self) -> list[PolicyVersion]:
        """Every applied version, oldest first (version 0, the default, is not stored)."""
        return [
            self._version(self.app.mapper.to_domain_event(record))
            for record in self.app.recorder.select_events(POLICY_STREAM_ID)
        ]

    def apply(self, policy: Policy, *, actor: str, reason: str | None = None) -> PolicyVersion:
        """Store `policy` (already checked by `parse_policy`) as the next version. The same
        policy as the current one is stored again: the log then says it was re-affirmed,
        by whom and when (an auditor's question as much as a change is)."""
        violations = storable_violations((("actor", actor), ("reason", reason)))
        if not actor.strip():
            violations.append(FieldViolation("actor", "must not be empty"))
        if reason is not None and len(reason) > MAX_REASON:
            violations.append(FieldViolation("reason", f"at most {MAX_REASON} characters"))
        if violations:
            raise ValidationFailed(violations)
        data = policy.as_data()
        digest = digest_of(data)
        stored = self.app.recorder.select_events(POLICY_STREAM_ID, desc=True, limit=1)
        if not stored:
            aggregate = DataPolicy._create(
                DataPolicy.Adopted,
                id=POLICY_STREAM_ID,
                policy=data,
                digest=digest,
                actor=actor,
                reason=reason,
            )
        else:
            aggregate = self.app.repository.get(POLICY_STREAM_ID)
            assert isinstance(aggregate, DataPolicy)
            aggregate.trigger_event(
                DataPolicy.Applied, policy=data, digest=digest, actor=actor, reason=reason
            )
        try:
            self.app.save(aggregate)
        except RecordConflictError:
            raise ConcurrentChange(
                "another policy version was applied meanwhile; nothing was written, try again"
            ) from None
        return PolicyVersion(
            aggregate.version, policy, digest, aggregate.modified_on, actor, reason
        )

    @staticmethod
    def _version(event: object) -> PolicyVersion:
        assert isinstance(event, DataPolicy.Applied)
        return PolicyVersion(
            version=event.originator_version,
            policy=Policy.model_validate(event.policy),
            digest=event.digest,
            applied_at=event.timestamp,
            actor=event.actor,
            reason=event.reason,
        )
