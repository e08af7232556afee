"""Whether a purpose has a lawful basis for one customer, and which fields a read for that
purpose must mask. Pure: the policy and the customer's consents in, decisions out.

A field is masked when the purpose may not use its category (policy: `Purpose.may_use`),
or when the purpose rests on consent and this customer has none in force for it. Reasons
are fixed codes, recorded in the access log next to the field names:

- `purpose_may_not_use:<category>`: the policy does not let this purpose use the category;
- `no_consent`: the purpose rests on consent and the customer never gave it;
- `consent_withdrawn`: the customer withdrew it;
- `needs_separate_consent`: the purpose needs a consent of its own (PIPL Art. 29, 39) and
  the customer only gave a broader one.

A consent to a purpose also covers the purposes under it in the data-use tree (a consent
to `third_party_sharing` covers `third_party_sharing.partner_x`), except those that need a
separate consent: a general consent never covers them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ledger.consent.records import ConsentEntry
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.profile import PERSONAL_FIELDS
from ledger.policy.classification import category_of
from ledger.policy.model import LawfulBasis, Policy, Purpose

# What a read declares when it declares nothing: serving the customer under contract.
DEFAULT_READ_PURPOSE = "essential.service"
NOT_FOR_PURPOSE = "purpose_may_not_use"
NO_CONSENT = "no_consent"
WITHDRAWN = "consent_withdrawn"
NEEDS_SEPARATE = "needs_separate_consent"


class PurposeNotInPolicy(ValidationFailed):
    """A read declared a data use the policy does not name: nobody may act for it
    (PERMISSION_DENIED through the API, an error naming `purpose` in the CLI)."""

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose
        super().__init__([FieldViolation("purpose", "not a purpose of the data policy")])


def _is_under(child: str, parent: str) -> bool:
    return child.startswith(parent + ".")


def resolve(policy: Policy, declared: str) -> Purpose:
    """The policy purpose a read is judged by. Nothing declared: `essential.service`. A
    code in the data-use namespaces the policy uses (`marketing.`...) must be one of its
    purposes (else PurposeNotInPolicy). Any other code (`kyc-refresh`, `support:42`, as
    callers sent before the policy existed) is a reason code, recorded as given and
    judged as the default purpose, which every principal holds: it grants nothing more."""
    found = policy.purpose(declared) if declared else None
    if found is not None:
        return found
    roots = {purpose.key.split(".")[0] for purpose in policy.purposes}
    if declared and declared.split(".")[0] in roots:
        raise PurposeNotInPolicy(declared)
    default = policy.purpose(DEFAULT_READ_PURPOSE)
    if default is None:  # a policy without it: the default reads nothing (fail closed)
        return Purpose(key=DEFAULT_READ_PURPOSE, lawful_basis=LawfulBasis.CONTRACT, categories=())
    return default


def missing_basis(purpose: Purpose, consents: Mapping[str, ConsentEntry]) -> str | None:
    """None when the purpose may process this customer's data; else the reason code."""
    if not purpose.needs_consent:
        return None  # contract, legal obligation, ...: the policy's own basis stands
    own = consents.get(purpose.key)
    if own is not None:
        if not own.given:
            return WITHDRAWN
        if purpose.separate_consent and not own.separate:
            return NEEDS_SEPARATE
        return None
    broader = [
        entry for key, entry in consents.items() if _is_under(purpose.key, key) and entry.given
    ]
    if broader:
        return NEEDS_SEPARATE if purpose.separate_consent else None
    return NO_CONSENT


def masked_fields(purpose: Purpose, consents: Mapping[str, ConsentEntry]) -> dict[str, str]:
    """Personal field -> reason, for every field a read for `purpose` must not show."""
    missing = missing_basis(purpose, consents)
    masked: dict[str, str] = {}
    for field in PERSONAL_FIELDS:
        category = category_of(field)
        if not purpose.may_use(category):
            masked[field] = f"{NOT_FOR_PURPOSE}:{category}"
        elif missing is not None:
            masked[field] = missing
    return masked
