"""Who is calling: a bearer token in the `authorization` metadata, or else the client
certificate of a mutual-TLS connection. Either way the principal is checked against the
revocation list on every call, so revoking takes effect on the principal's next call.

A client certificate names its principal in the subject's common name (CN) and its roles in
the subject's organisational-unit (OU) entries; issue certificates from the CA given in
LEDGER_TLS_CLIENT_CA_FILE accordingly. A bearer token sent over mTLS takes precedence (a
service may act for a person), and both must be valid.
"""

from __future__ import annotations

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


def _metadata(context: grpc.ServicerContext, key: str) -> list[str]:
    values = []
    for name, value in context.invocation_metadata() or ():
        if name == key:
            values.append(value.decode("latin-1") if isinstance(value, bytes) else value)
    return values


class Authenticator:
    def __init__(self, verifier: TokenVerifier, store: ApiStore) -> None:
        self.verifier = verifier
        self.store = store

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        principal = self._from_token(context) or self._from_certificate(context)
        if principal is None:
            raise TokenError(
                "UNAUTHENTICATED",
                "no credentials: send 'authorization: Bearer <token>' or a client certificate",
            )
        revoked = self.store.revoked_at(principal.name)
        if revoked is not None and principal.issued_at <= revoked:
            raise TokenError("CREDENTIALS_REVOKED", "the principal's credentials were revoked")
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
        )
