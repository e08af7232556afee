"""Which purposes a principal may act for.

A read declares its purpose (`ledger-purpose` metadata; none declared: `essential.service`)
and is refused (PERMISSION_DENIED, recorded) unless the principal is granted it. A token may
name its principal's purposes (`ledger token issue --purpose`); otherwise, and for client
certificates, the principal holds the defaults of its roles below. Tokens issued before
purposes existed keep working: every role holds `essential`, which covers the default.

A granted purpose covers the purposes under it in the Fides data-use tree (`marketing`
covers `marketing.advertising.first_party`); `*` covers every purpose.
"""

from __future__ import annotations

from collections.abc import Iterable

from ledger.api.authz import Role

ANY = "*"
ROLE_PURPOSES: dict[str, tuple[str, ...]] = {
    Role.ADMIN: (ANY,),
    Role.COMPLIANCE: (ANY,),
    # Internal systems: serving customers, our own marketing, aggregate reports. Sharing
    # with third parties and cross-border transfer only when a token names them.
    Role.SERVICE: ("essential", "marketing", "analytics"),
    Role.SALES: ("essential", "marketing"),
    Role.AUDITOR: ("essential",),
    Role.PERSONAL_DATA: (),
}


def granted(roles: Iterable[str], purposes: Iterable[str] | None) -> tuple[str, ...]:
    """The purposes a principal holds: its token's, else its roles' defaults."""
    if purposes is not None:
        return tuple(purposes)
    return tuple(dict.fromkeys(p for role in roles for p in ROLE_PURPOSES.get(role, ())))


def may_act_for(purpose: str, holds: Iterable[str]) -> bool:
    return any(p in (ANY, purpose) or purpose.startswith(p + ".") for p in holds)
