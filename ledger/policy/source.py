"""Where the services that enforce the policy get the current one.

The policy is versioned in the log (`ledger policy apply`, `ledger.policy.log`); a service
asks for the current version on every use, so a newly applied policy governs the very next
read. Until a ledger holds a policy of its own, the shipped default (version 0) applies.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Protocol

from ledger.policy.log import PolicyLog
from ledger.policy.model import Policy, default_policy

if TYPE_CHECKING:
    from ledger.application import CustomerLedger


class PolicySource(Protocol):
    def current(self) -> tuple[int, Policy]:
        """(version, policy); version 0 is the shipped default."""


class FixedPolicy:
    """One policy, whatever the log says: the default until the policy log is wired in,
    and the way tests state a policy of their own."""

    def __init__(self, policy: Policy, version: int = 0) -> None:
        self._current = (version, policy)

    def current(self) -> tuple[int, Policy]:
        return self._current


@cache
def shipped_default() -> PolicySource:
    """The default policy, parsed once per process (parsing checks it against the Fides
    taxonomy: ~0.25 s)."""
    return FixedPolicy(default_policy())


def policy_for(ledger: CustomerLedger) -> PolicySource:
    """The policy that governs `ledger`: the one place consent, purpose-bound reads, the
    import and the export ask (CLI and API alike): the versions in its log
    (`ledger policy apply`), the shipped default (version 0) until one is applied. Asked
    on every use, so a newly applied version governs the next call."""
    return PolicyLog(ledger)
