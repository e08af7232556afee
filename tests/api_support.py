"""Test support for the API: a real server on a loopback port over a real store, tokens for
any principal, and a test certificate authority for mutual TLS (made with `cryptography`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ledger.api.server import ApiServer, build_server
from ledger.api.tokens import issue_token
from ledger.application import CustomerLedger
from ledger.client import LedgerClient, error_details
from ledger.config import Settings
from ledger.signing import LedgerSigner
from ledger.v1 import resources_pb2
from tests.helpers import StoreHandle

ADA: dict[str, Any] = {
    "given_name": "Ada",
    "family_name": "Lovelace",
    "emails": ["ada@example.org"],
    "phones": ["+44 20 7946 0018"],
    "addresses": [resources_pb2.Address(locality="London", postcode="SW1Y 4JH", country="GB")],
    "external_ids": {"CRM": "A-1001"},
    "locale": "en-GB",
}


def customer(**overrides: Any) -> resources_pb2.Customer:
    return resources_pb2.Customer(**{**ADA, **overrides})


@dataclass
class Api:
    ledger: CustomerLedger
    server: ApiServer
    settings: Settings
    clients: list[LedgerClient] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def token(self, principal: str, *roles: str, ttl: timedelta = timedelta(hours=1)) -> str:
        signer = LedgerSigner.load_or_create(self.settings.resolved_token_key_file)
        return issue_token(signer, principal, list(roles), ttl)

    def client(self, principal: str, *roles: str, **options: Any) -> LedgerClient:
        made = LedgerClient(self.target, token=self.token(principal, *roles), **options)
        self.clients.append(made)
        return made

    def anonymous(self) -> LedgerClient:
        made = LedgerClient(self.target)
        self.clients.append(made)
        return made

    def close(self) -> None:
        for made in self.clients:
            made.close()
        self.server.stop(0)
        self.ledger.close()


def start_api(store: StoreHandle, settings: Settings | None = None) -> Api:
    settings = settings or store.settings
    ledger = store.open()
    try:
        server = build_server(ledger, settings, listen="127.0.0.1:0")
    except BaseException:
        ledger.close()
        raise
    return Api(ledger=ledger, server=server, settings=settings)


@pytest.fixture
def api(store: StoreHandle) -> Iterator[Api]:
    started = start_api(store)
    try:
        yield started
    finally:
        started.close()


def code_of(error: BaseException) -> grpc.StatusCode:
    assert isinstance(error, grpc.RpcError)
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    return code


def fails(call: Any, code: grpc.StatusCode) -> dict[str, Any]:
    """Run `call()`; it must fail with `code`. Returns the error's rich details."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert code_of(caught.value) == code, caught.value
    return error_details(caught.value)


# A certificate authority for mutual TLS ---------------------------------------------------


@dataclass
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ledger test CA")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    def issue(
        self,
        common_name: str,
        *,
        units: tuple[str, ...] = (),
        server: bool = False,
        not_before: datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in units]
        start = not_before or datetime.now(UTC) - timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return certificate.public_bytes(serialization.Encoding.PEM), key_pem

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, folder: Path, name: str, pem: bytes) -> Path:
        path = folder / name
        path.write_bytes(pem)
        path.chmod(0o600)
        return path
