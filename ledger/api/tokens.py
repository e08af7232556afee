"""Bearer tokens for the API: compact JWS (a JWT) signed with Ed25519 ("EdDSA", RFC 8037).

A token says who the caller is (`sub`), which roles it holds, when it was issued and when it
expires, and carries a random id (`jti`) for the access log. The standard format means any
JWT library can read one; verification here is strict (exact algorithm, our key id, known
roles, a name that is a plain identifier), because a lenient verifier is how JWTs get forged.

Tokens are signed with the API's own token key (`LEDGER_TOKEN_KEY_FILE`), not the ledger's
signing key: certificates and tree heads stay trustworthy even if the token key leaks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.signing import LedgerSigner, public_key_id, verify_signature

ALGORITHM = "EdDSA"
ISSUER = "ledger"
MAX_TOKEN_LENGTH = 4096
MAX_VERIFIED = 10_000  # remembered good signatures (tokens in use), then forgotten
CLOCK_SKEW = timedelta(seconds=60)
# Principals become owners of customers (a sales principal owns what it registers), so they
# follow the owner-id rule: plain identifiers, never free text that could be personal data.
PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")
PURPOSE = re.compile(r"[a-z0-9][a-z0-9_.]{0,99}")
# Three base64url parts; checked before anything else, so every later step sees ASCII only.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", re.ASCII)


class TokenError(Exception):
    """The token is not one this ledger issued, or no longer valid. `reason` is a fixed
    UPPER_SNAKE code for google.rpc.ErrorInfo; the message never quotes the token.
    `subject`: the principal the credential names, set only once its signature (or the TLS
    layer) proved it genuine, so a forged token can never put a name in the access log."""

    def __init__(self, reason: str, message: str, *, subject: str | None = None) -> None:
        self.reason = reason
        self.subject = subject
        super().__init__(message)


@dataclass(frozen=True)
class TokenClaims:
    principal: str
    roles: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    token_id: str
    # The purposes the principal may act for (`ledger.api.purposes`); None: the defaults
    # of its roles (tokens issued before purposes existed carry none).
    purposes: tuple[str, ...] | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64url without padding: one encoding per value, so a token cannot be
    altered into another string that verifies."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise TokenError("TOKEN_INVALID", "the token is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("TOKEN_INVALID", "the token is not base64url") from None
    if _b64(data) != text:
        raise TokenError("TOKEN_INVALID", "the token is not canonical base64url")
    return data


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenError("TOKEN_INVALID", "the token is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError("TOKEN_INVALID", "the token is not a JSON object")
    return value


def issue_token(
    signer: LedgerSigner,
    principal: str,
    roles: list[str] | tuple[str, ...],
    ttl: timedelta,
    *,
    now: datetime | None = None,
    purposes: list[str] | tuple[str, ...] | None = None,
) -> str:
    """A signed token; the caller validated principal, roles and purposes (see
    `check_principal`, `check_purposes`). `purposes`: what the principal may act for,
    replacing its roles' defaults (None: the defaults)."""
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": signer.key_id()}
    claims = {
        "iss": ISSUER,
        "sub": principal,
        "roles": sorted(set(roles)),
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "jti": secrets.token_hex(12),
    }
    if purposes is not None:
        claims["purposes"] = sorted(set(purposes))
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
        for part in (header, claims)
    )
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode('ascii')))}"


def check_purposes(purposes: object) -> tuple[str, ...]:
    """A token's purposes: data-use codes (`marketing`, `essential.service`) or `*`."""
    if not isinstance(purposes, list | tuple) or not all(
        isinstance(p, str) and (p == "*" or PURPOSE.fullmatch(p)) for p in purposes
    ):
        raise TokenError("TOKEN_INVALID", "a token's purposes are data-use codes")
    return tuple(purposes)


def check_principal(principal: object) -> str:
    if not isinstance(principal, str) or not PRINCIPAL.fullmatch(principal):
        raise TokenError(
            "PRINCIPAL_INVALID",
            "a principal is an id of A-Z a-z 0-9 _ . @ - (starting with a letter or digit)",
        )
    return principal


class TokenVerifier:
    """Checks tokens against one public key (PEM) and a set of known role names."""

    def __init__(self, public_key_pem: str, known_roles: frozenset[str]) -> None:
        self._public_key_pem = public_key_pem
        self._key_id = public_key_id(public_key_pem)
        self._known_roles = known_roles
        # Signatures already checked (an Ed25519 verify costs ~50 us of CPU on every call
        # otherwise). Only the signature check is remembered: claims, expiry and
        # revocation are still checked on every call.
        self._verified: set[bytes] = set()
        self._verified_lock = threading.Lock()

    def verify(self, token: str, *, now: datetime | None = None) -> TokenClaims:
        """The token's claims, or TokenError: whatever the bytes, nothing else escapes
        (an escaping exception becomes INTERNAL, and gRPC logs it, with what it carries)."""
        if len(token) > MAX_TOKEN_LENGTH or not _COMPACT.fullmatch(token):
            raise TokenError("TOKEN_INVALID", "not a token issued by this ledger")
        try:
            return self._verify(token, now)
        except TokenError:
            raise
        except Exception as error:  # a bug in parsing must still not echo the token
            raise TokenError(
                "TOKEN_INVALID", f"not a token issued by this ledger ({type(error).__name__})"
            ) from None

    def _verify(self, token: str, now: datetime | None) -> TokenClaims:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = _json(_unb64(header_b64))
        if header.get("alg") != ALGORITHM or header.get("kid") != self._key_id:
            raise TokenError("TOKEN_INVALID", "not a token issued by this ledger's token key")
        signing_input = f"{header_b64}.{claims_b64}".encode("ascii")
        fingerprint = hashlib.sha256(token.encode("ascii", "replace")).digest()
        if fingerprint not in self._verified:
            if not verify_signature(self._public_key_pem, signing_input, _unb64(signature_b64)):
                raise TokenError("TOKEN_INVALID", "the token's signature is not valid")
            with self._verified_lock:
                if len(self._verified) >= MAX_VERIFIED:
                    self._verified.clear()
                self._verified.add(fingerprint)
        return self._claims(_json(_unb64(claims_b64)), now or datetime.now(UTC))

    def _claims(self, claims: dict[str, Any], now: datetime) -> TokenClaims:
        """Runs only on claims whose signature verified: refusals from here name the
        subject (when it is a valid principal id) for the access log."""
        try:
            return self._checked_claims(claims, now)
        except TokenError as error:
            sub = claims.get("sub")
            if error.subject is None and isinstance(sub, str) and PRINCIPAL.fullmatch(sub):
                error.subject = sub
            raise

    def _checked_claims(self, claims: dict[str, Any], now: datetime) -> TokenClaims:
        roles = claims.get("roles")
        iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
        if (
            claims.get("iss") != ISSUER
            or not isinstance(roles, list)
            or not all(isinstance(r, str) and r in self._known_roles for r in roles)
            or not all(isinstance(t, int) and not isinstance(t, bool) for t in (iat, exp))
            or not isinstance(jti, str)
        ):
            raise TokenError("TOKEN_INVALID", "the token's claims are not valid")
        assert isinstance(iat, int) and isinstance(exp, int)
        try:
            issued_at = datetime.fromtimestamp(iat, UTC)
            expires_at = datetime.fromtimestamp(exp, UTC)
        except (OverflowError, OSError, ValueError):
            raise TokenError("TOKEN_INVALID", "the token's times are not valid") from None
        if expires_at <= now:
            raise TokenError("TOKEN_EXPIRED", "the token has expired")
        if issued_at > now + CLOCK_SKEW:
            raise TokenError("TOKEN_INVALID", "the token is issued in the future")
        purposes = claims.get("purposes")
        return TokenClaims(
            principal=check_principal(claims.get("sub")),
            roles=tuple(roles),
            issued_at=issued_at,
            expires_at=expires_at,
            token_id=jti,
            purposes=None if purposes is None else check_purposes(purposes),
        )


def parse_ttl(text: str) -> timedelta:
    """`90s`, `30m`, `8h`, `7d` (or plain seconds); at most a year."""
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError("a duration like 90s, 30m, 8h or 7d")
    seconds = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if not 0 < seconds <= 366 * 86400:
        raise ValueError("between 1 second and 366 days")
    return timedelta(seconds=seconds)
