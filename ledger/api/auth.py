"""Who is calling: a bearer token in the `authorization` metadata, or else the client
certificate of a mutual-TLS connection. Either way the principal is checked against the
revocation list on every call, so revoking takes effect on the principal's next call.

A client certificate names its principal in the subject's common name (CN) and its roles in
the subject's organisational-unit (OU) entries; issue certificates from the CA given in
LEDGER_TLS_CLIENT_CA_FILE accordingly. A bearer token sent over mTLS takes precedence (a
service may act for a person), and both must be valid.

A long call (a followed stream) re-checks its credential while it runs (`still_valid`):
expiry from the credential itself, revocation from a copy of the revocation list at most
`recheck_seconds` old, shared by all streams (one query per interval, however many are open).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from ledger.api.api_store import ApiStore
from ledger.api.authz import ROLES
from ledger.api.tokens import TokenError, TokenVerifier, check_principal


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    issued_at: datetime
    via: str  # "token" or "mtls"
    token_id: str | None = None
    expires_at: datetime | None = None  # the token's expiry, the certificate's not-after
    # The purposes it may act for (a token's `purposes` claim); None: its roles' defaults
    # (`ledger.api.purposes`), as for every client certificate.
    purposes: tuple[str, ...] | None = None


def _metadata(context: grpc.ServicerContext, key: str) -> list[str]:
    values = []
    for name, value in context.invocation_metadata() or ():
        if name == key:
            values.append(value.decode("latin-1") if isinstance(value, bytes) else value)
    return values


class RevocationWatch:
    """The revocation list as it stood at most `max_age` seconds ago: what open streams
    check between deliveries, so a revocation ends them within about `max_age` seconds at
    the cost of one query per interval for all of them together."""

    def __init__(self, store: ApiStore, max_age: float) -> None:
        self.store = store
        self.max_age = max_age
        self._lock = threading.Lock()
        self._loaded_at = -float("inf")
        self._revoked: dict[str, datetime] = {}

    def revoked_at(self, principal: str) -> datetime | None:
        with self._lock:
            now = time.monotonic()
            if now - self._loaded_at >= self.max_age:
                self._revoked = dict(self.store.revocations())
                self._loaded_at = now
            return self._revoked.get(principal)


def _revoked(principal: Principal) -> TokenError:
    return TokenError(
        "CREDENTIALS_REVOKED",
        "the principal's credentials were revoked",
        subject=principal.name,
    )


class Authenticator:
    def __init__(
        self, verifier: TokenVerifier, store: ApiStore, *, recheck_seconds: float = 0.5
    ) -> None:
        self.verifier = verifier
        self.store = store
        self.watch = RevocationWatch(store, recheck_seconds)

    def still_valid(self, principal: Principal, *, now: datetime | None = None) -> None:
        """Raises TokenError once the credential a call was opened with has expired or
        been revoked (checked by long calls between deliveries; costs no query except
        the shared revocation list's refresh)."""
        moment = now or datetime.now(UTC)
        if principal.expires_at is not None and principal.expires_at <= moment:
            what = "token" if principal.via == "token" else "client certificate"
            raise TokenError(
                "TOKEN_EXPIRED" if principal.via == "token" else "CERTIFICATE_EXPIRED",
                f"the {what} has expired",
                subject=principal.name,
            )
        revoked = self.watch.revoked_at(principal.name)
        if revoked is not None and principal.issued_at <= revoked:
            raise _revoked(principal)

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        principal = self._from_token(context) or self._from_certificate(context)
        if principal is None:
            raise TokenError(
                "UNAUTHENTICATED",
                "no credentials: send 'authorization: Bearer <token>' or a client certificate",
            )
        revoked = self.store.revoked_at(principal.name)
        if revoked is not None and principal.issued_at <= revoked:
            raise _revoked(principal)
        return principal

    def _from_token(self, context: grpc.ServicerContext) -> Principal | None:
        headers = _metadata(context, "authorization")
        if not headers:
            return None
        if len(headers) > 1:
            raise TokenError("TOKEN_INVALID", "send one authorization header")
        scheme, _, token = headers[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenError("TOKEN_INVALID", "expected 'authorization: Bearer <token>'")
        claims = self.verifier.verify(token.strip())
        return Principal(
            name=claims.principal,
            roles=frozenset(claims.roles),
            issued_at=claims.issued_at,
            via="token",
            token_id=claims.token_id,
            expires_at=claims.expires_at,
            purposes=claims.purposes,
        )

    def _from_certificate(self, context: grpc.ServicerContext) -> Principal | None:
        """Only certificates the TLS layer verified against the client CA reach here (the
        server requires and checks them when mutual TLS is configured)."""
        # grpc gives a list of bytes per property (its stubs say bytes).
        values: object = context.auth_context().get("x509_pem_cert")
        if not values:
            return None
        pem = values[0] if isinstance(values, list | tuple) else values
        if not isinstance(pem, bytes):
            return None
        certificate = x509.load_pem_x509_certificate(pem)
        subject = certificate.subject
        names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1:
            raise TokenError("CERTIFICATE_INVALID", "the client certificate needs one CN")
        try:
            name = check_principal(names[0].value)
        except TokenError:
            raise TokenError(
                "CERTIFICATE_INVALID", "the client certificate's CN is not a principal id"
            ) from None
        units = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        roles = {str(unit.value) for unit in units}
        return Principal(
            name=name,
            roles=frozenset(roles & ROLES),
            issued_at=certificate.not_valid_before_utc.astimezone(UTC),
            via="mtls",
            expires_at=certificate.not_valid_after_utc.astimezone(UTC),
        )
