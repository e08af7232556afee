"""Compliance and key commands: certificates, the ledger's public key, KEK rotation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ledger.cli.common import AddCommand, emit, open_for
from ledger.config import ConfigError, Settings
from ledger.crypto_shred.certificate import SignedCertificate
from ledger.crypto_shred.kek import RotatableKekProvider
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.signing import LedgerSigner

EXIT_INTEGRITY = 4


def cmd_verify_certificate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8") if args.file != "-" else sys.stdin.read()
    except OSError as exc:
        raise ValidationFailed(
            [FieldViolation("file", f"cannot be read ({exc.strerror})")]
        ) from None
    certificate = SignedCertificate.from_json(text)
    if args.public_key:
        public_key = Path(args.public_key).read_text(encoding="utf-8")
    else:
        public_key = LedgerSigner.load(
            settings.resolved_signing_key_file, setting="LEDGER_SIGNING_KEY_FILE"
        ).public_key_pem()
    ok = certificate.verify(public_key)
    emit(args, {"valid": ok}, "certificate is valid" if ok else "certificate is NOT valid")
    return 0 if ok else EXIT_INTEGRITY


def cmd_public_key(args: argparse.Namespace, settings: Settings) -> int:
    signer = LedgerSigner.load(
        settings.resolved_signing_key_file, setting="LEDGER_SIGNING_KEY_FILE"
    )
    emit(
        args,
        {"key_id": signer.key_id(), "public_key_pem": signer.public_key_pem()},
        signer.public_key_pem().rstrip(),
    )
    return 0


def cmd_rotate_kek(args: argparse.Namespace, settings: Settings) -> int:
    with open_for(settings) as ledger:
        provider = ledger.keys.store.provider
        if not isinstance(provider, RotatableKekProvider):
            raise ConfigError("the configured KEK provider rotates its keys itself")
        old = provider.active_kek_id()
        new = provider.rotate()
        count = ledger.keys.store.rewrap_all()
        provider.retire(old)
    emit(
        args,
        {"retired": old, "active": new, "rewrapped": count},
        f"re-wrapped {count} data keys under KEK {new}; KEK {old} retired",
    )
    return 0


def add_commands(add: AddCommand) -> None:
    p = add(
        "verify-certificate", cmd_verify_certificate, "check an erasure certificate's signature"
    )
    p.add_argument("file", help="certificate JSON file, or - for stdin")
    p.add_argument(
        "--public-key",
        metavar="PEM_FILE",
        help="the ledger's public key (default: this ledger's own)",
    )

    add("public-key", cmd_public_key, "print the ledger's Ed25519 public key")
    add(
        "rotate-kek",
        cmd_rotate_kek,
        "rotate the key-encryption key: re-wrap every data key, touch no event",
    )
