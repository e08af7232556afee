"""Who may call which method, on which customers, and who may read personal data.

One table (`METHOD_ACCESS`) gives, per method, the roles that may call it and whether each
role reaches every customer (`ALL`) or only the customers it owns (`OWN`). The README's
permission matrix is this table. A principal may hold several roles; a call is allowed if
any of them allows it, and for one customer the roles that reach it decide whether its
personal data is shown.

The record-level rule exists because the insider who quietly takes customers away is a
threat this product is meant to stop: a `sales` principal sees and changes only the
customers it owns, cannot reassign them, and never sees anyone else's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    SERVICE = "service"  # internal systems that register and look up customers
    SALES = "sales"  # staff who own customers; reach their own only
    AUDITOR = "auditor"  # history, proofs, access log; metadata only
    COMPLIANCE = "compliance"  # erasure and subject-access exports
    ADMIN = "admin"  # everything
    # A grant added to another role (e.g. an auditor on a specific investigation): lets it
    # read personal data in what that role may already call.
    PERSONAL_DATA = "personal-data"


class Scope(StrEnum):
    ALL = "all"
    OWN = "own"


ROLES = frozenset(r.value for r in Role)
# Roles whose calls return personal data (the others get it masked: REDACTED).
PERSONAL_DATA_READERS = frozenset(
    {Role.SERVICE, Role.SALES, Role.COMPLIANCE, Role.ADMIN, Role.PERSONAL_DATA}
)

ALL, OWN = Scope.ALL, Scope.OWN
S, SA, AU, C, AD = Role.SERVICE, Role.SALES, Role.AUDITOR, Role.COMPLIANCE, Role.ADMIN

METHOD_ACCESS: dict[str, dict[Role, Scope]] = {
    # CustomerService
    "CreateCustomer": {S: ALL, SA: OWN, AD: ALL},
    "GetCustomer": {S: ALL, SA: OWN, AU: ALL, C: ALL, AD: ALL},
    "ListCustomers": {S: ALL, SA: OWN, AU: ALL, C: ALL, AD: ALL},
    "UpdateCustomer": {S: ALL, SA: OWN, AD: ALL},
    "AssignOwner": {S: ALL, AD: ALL},
    "MarkVerified": {S: ALL, C: ALL, AD: ALL},
    "MergeCustomers": {S: ALL, SA: OWN, AD: ALL},
    "UnmergeCustomer": {S: ALL, SA: OWN, AD: ALL},
    "FindDuplicates": {S: ALL, SA: OWN, C: ALL, AD: ALL},
    "DismissDuplicate": {S: ALL, SA: OWN, AD: ALL},
    # AuditService
    "StreamEvents": {S: ALL, AU: ALL, AD: ALL},
    "ListCustomerEvents": {S: ALL, SA: OWN, AU: ALL, C: ALL, AD: ALL},
    "GetCustomerAsOf": {S: ALL, SA: OWN, AU: ALL, C: ALL, AD: ALL},
    "GetFieldHistory": {S: ALL, SA: OWN, AU: ALL, C: ALL, AD: ALL},
    "GetTreeHead": {S: ALL, AU: ALL, C: ALL, AD: ALL},
    "GetInclusionProof": {S: ALL, AU: ALL, C: ALL, AD: ALL},
    "GetConsistencyProof": {S: ALL, AU: ALL, C: ALL, AD: ALL},
    "ListAccessLog": {AU: ALL, C: ALL, AD: ALL},
    "ListAccessAlerts": {AU: ALL, AD: ALL},
    # ComplianceService
    "EraseCustomer": {C: ALL, AD: ALL},
    "ExportCustomerData": {C: ALL, AD: ALL},
    # The policy is not personal data: every role may read what it is bound by.
    "GetPolicy": {S: ALL, SA: ALL, AU: ALL, C: ALL, AD: ALL},
    "HandoverCustomers": {AD: ALL},
    # Consent is recorded by the systems and staff that collect it, and by compliance.
    "GiveConsent": {S: ALL, SA: OWN, C: ALL, AD: ALL},
    "WithdrawConsent": {S: ALL, SA: OWN, C: ALL, AD: ALL},
    "ListConsents": {S: ALL, SA: OWN, AU: ALL, C: ALL, AD: ALL},
}


class AccessDenied(Exception):
    """The caller may not do this (PERMISSION_DENIED). The message names the method or
    customer ids only; the attempt is recorded before the caller hears of it."""

    def __init__(self, message: str, customer_ids: tuple[str, ...] = ()) -> None:
        self.customer_ids = customer_ids
        super().__init__(message)


@dataclass(frozen=True)
class Grant:
    """What one principal may do in one method: the roles that allow it, with their scope."""

    method: str
    principal: str
    roles: frozenset[str]
    scopes: dict[Role, Scope]

    @classmethod
    def for_call(cls, method: str, principal: str, roles: frozenset[str]) -> Grant:
        allowed = METHOD_ACCESS.get(method, {})
        scopes = {role: scope for role, scope in allowed.items() if role.value in roles}
        if not scopes:
            raise AccessDenied(f"the caller's roles do not allow {method}")
        return cls(method=method, principal=principal, roles=roles, scopes=scopes)

    def _reaching(self, owner: str | None) -> list[Role]:
        return [
            role
            for role, scope in self.scopes.items()
            if scope is Scope.ALL or (owner is not None and owner == self.principal)
        ]

    def check_record(self, customer_id: str, owner: str | None) -> None:
        """Refuse a customer none of the caller's roles reaches (another owner's, for sales)."""
        if not self._reaching(owner):
            raise AccessDenied(
                f"{self.method} on customer {customer_id} is limited to its owner",
                (customer_id,),
            )

    def may_read_personal(self, owner: str | None) -> bool:
        """Personal data of this customer is shown if a role that reaches it reads personal
        data, or the principal holds the `personal-data` grant."""
        if Role.PERSONAL_DATA.value in self.roles and self._reaching(owner):
            return True
        return any(role in PERSONAL_DATA_READERS for role in self._reaching(owner))

    @property
    def may_read_personal_anywhere(self) -> bool:
        """For calls over many customers at once (the log stream): personal data only for
        roles that reach every customer."""
        return self.may_read_personal(owner=None)

    @property
    def owner_filter(self) -> str | None:
        """The hook for List and FindDuplicates: when every allowing role is limited to its
        own customers, the projection query must be restricted to `owner = principal`
        (None: no restriction). Filtering in the query, not after it, keeps pages full and
        leaks no count of other owners' customers."""
        if all(scope is Scope.OWN for scope in self.scopes.values()):
            return self.principal
        return None

    @property
    def new_customer_owner(self) -> str | None:
        """A customer created by an owner-limited principal must be owned by it."""
        return self.owner_filter
