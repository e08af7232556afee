"""Signed erasure certificates: the ledger's proof to a data subject or regulator that a
customer's key was destroyed, when, by whom and on what legal basis.

The signature covers one canonical byte string (sorted-key compact JSON with a fixed type
tag), so anyone can re-derive the signed bytes from the certificate's fields alone and check
them with the ledger's public key, without trusting how the JSON was laid out in transit.
The certificate holds no personal data: ids, times, names of staff and legal references only.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from ledger.signing import LedgerSigner, public_key_id, verify_signature

CERTIFICATE_TYPE = "ledger.erasure-certificate.v1"
SIGNATURE_BYTES = 64


class CertificateFormatError(ValueError):
    """The text is not a well-formed signed erasure certificate (says which part)."""


@dataclass(frozen=True)
class ErasureCertificate:
    customer_id: str
    erased_at: str  # ISO-8601 with a zero UTC offset
    actor: str
    legal_basis: str
    reason: str
    key_id: str
    last_version: int
    ledger_key_id: str
    # Per-category destruction (`ledger.crypto_shred.category_erasure`): the destroyed data
    # categories, comma-separated and sorted; `key_id` then lists `category=key id` pairs.
    # Empty for a whole-customer erasure, and then left out of the signed content, so every
    # certificate issued before categories existed still verifies.
    categories: str = ""

    @property
    def category_list(self) -> list[str]:
        return [c for c in self.categories.split(",") if c]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "last_version":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise CertificateFormatError("last_version must be a non-negative integer")
            elif not isinstance(value, str):
                raise CertificateFormatError(f"{f.name} must be a string")
        try:
            moment = datetime.fromisoformat(self.erased_at)
        except ValueError:
            raise CertificateFormatError("erased_at must be an ISO-8601 time") from None
        if moment.utcoffset() != timedelta(0):
            raise CertificateFormatError("erased_at must be in UTC (offset +00:00 or Z)")

    def to_dict(self) -> dict[str, Any]:
        """The signed content: the fields plus the type tag, so a signature over one kind
        of document can never be passed off as another."""
        content = {**asdict(self), "type": CERTIFICATE_TYPE}
        if not self.categories:
            del content["categories"]
        return content

    def canonical_bytes(self) -> bytes:
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErasureCertificate:
        expected = {f.name for f in fields(cls)}
        given = set(data) - {"type"}
        if "categories" not in given:
            expected.discard("categories")
        if data.get("type", CERTIFICATE_TYPE) != CERTIFICATE_TYPE:
            raise CertificateFormatError(f"not a {CERTIFICATE_TYPE} certificate")
        if given != expected:
            missing, unknown = sorted(expected - given), sorted(given - expected)
            raise CertificateFormatError(
                f"certificate fields: missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        return cls(**{name: data[name] for name in expected})


@dataclass(frozen=True)
class SignedCertificate:
    certificate: ErasureCertificate
    signature: str  # standard base64 of the 64-byte Ed25519 signature

    @classmethod
    def issue(cls, certificate: ErasureCertificate, signer: LedgerSigner) -> SignedCertificate:
        """Sign; refuses a certificate naming another ledger key than the signer's, since it
        would point verifiers at the wrong public key."""
        if certificate.ledger_key_id != signer.key_id():
            raise ValueError("the certificate's ledger_key_id is not the signer's key id")
        signature = signer.sign(certificate.canonical_bytes())
        return cls(certificate=certificate, signature=base64.b64encode(signature).decode("ascii"))

    def to_json(self) -> str:
        document = {"certificate": self.certificate.to_dict(), "signature": self.signature}
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> SignedCertificate:
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CertificateFormatError(f"not JSON: {exc}") from None
        if not isinstance(document, dict) or set(document) != {"certificate", "signature"}:
            raise CertificateFormatError('expected {"certificate": {...}, "signature": "..."}')
        body, signature = document["certificate"], document["signature"]
        if not isinstance(body, dict):
            raise CertificateFormatError("'certificate' must be an object")
        if not isinstance(signature, str):
            raise CertificateFormatError("'signature' must be a base64 string")
        return cls(certificate=ErasureCertificate.from_dict(body), signature=signature)

    def verify(self, public_key_pem: str) -> bool:
        """True only for an unaltered certificate signed by the holder of this key.

        The signature text must be the canonical base64 of the signature, so that even a
        change to base64 padding bits (which would decode to the same bytes) fails.
        """
        try:
            signature = base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        if len(signature) != SIGNATURE_BYTES:
            return False
        if base64.b64encode(signature).decode("ascii") != self.signature:
            return False
        # A key that is not Ed25519 PEM raises SigningKeyError: a setup error, not a forgery.
        if public_key_id(public_key_pem) != self.certificate.ledger_key_id:
            return False
        return verify_signature(public_key_pem, self.certificate.canonical_bytes(), signature)
