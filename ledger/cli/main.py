"""The `ledger` command line.

User mistakes (bad input, unknown ids, stale versions, erased customers, bad settings) end
with one line on stderr and a non-zero exit code, never a traceback. Output is readable
text, or JSON with `--json`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import PersistenceError

from ledger.application import CustomerLedger
from ledger.bootstrap import open_ledger
from ledger.cli.render import customer_text, dumps, history_text
from ledger.cli.values import ADDRESS_OPTIONS, parse_assignment, registration_profile
from ledger.config import ConfigError, Settings
from ledger.crypto_shred.certificate import CertificateFormatError, SignedCertificate
from ledger.crypto_shred.kek import KeyFileError, RotatableKekProvider
from ledger.crypto_shred.mapper import SealError
from ledger.domain.errors import (
    CustomerErasedError,
    FieldViolation,
    LedgerError,
    StaleVersion,
    ValidationFailed,
)
from ledger.signing import InsecureKeyFileError, LedgerSigner, SigningKeyError

EXIT_INVALID = 2
EXIT_REFUSED = 3
EXIT_INTEGRITY = 4

Handler = Callable[[argparse.Namespace, Settings], int]


def _customer_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise ValidationFailed([FieldViolation("id", "not a customer id (UUID)")]) from None


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(dumps(data) if args.json else text)


def _ledger(settings: Settings) -> CustomerLedger:
    return open_ledger(settings)


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    profile = registration_profile(vars(args))
    with _ledger(settings) as ledger:
        customer_id = ledger.register(profile, actor=settings.actor, reason=args.reason)
    _emit(args, {"id": str(customer_id)}, str(customer_id))
    return 0


def cmd_change(args: argparse.Namespace, settings: Settings) -> int:
    changes: dict[str, Any] = {}
    for assignment in args.set:
        field, value = parse_assignment(assignment)
        changes[field] = value
    with _ledger(settings) as ledger:
        customer_id = _customer_id(args.id)
        changed = ledger.change(
            customer_id,
            changes,
            actor=settings.actor,
            expected_version=args.expected_version,
            reason=args.reason,
        )
        version = ledger.get(customer_id).version
    text = f"changed {', '.join(changed)}; now version {version}" if changed else "nothing changed"
    _emit(args, {"id": args.id, "changed_fields": changed, "version": version}, text)
    return 0


def cmd_assign_owner(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        customer_id = _customer_id(args.id)
        changed = ledger.assign_owner(
            customer_id,
            args.owner,
            actor=settings.actor,
            expected_version=args.expected_version,
            reason=args.reason,
        )
        version = ledger.get(customer_id).version
    text = f"owner is now {args.owner}" if changed else "owner unchanged"
    _emit(args, {"id": args.id, "changed": changed, "version": version}, text)
    return 0


def cmd_mark_verified(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        customer_id = _customer_id(args.id)
        ledger.mark_verified(
            customer_id,
            actor=settings.actor,
            expected_version=args.expected_version,
            reason=args.reason,
        )
        view = ledger.get(customer_id)
    _emit(args, view.to_json(), f"verified; now version {view.version}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        view = ledger.get(_customer_id(args.id))
    _emit(args, view.to_json(), customer_text(view))
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        entries = ledger.history(_customer_id(args.id))
    _emit(args, [e.to_json() for e in entries], history_text(entries))
    return 0


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed([FieldViolation("time", "not an ISO-8601 time")]) from None


def cmd_as_of(args: argparse.Namespace, settings: Settings) -> int:
    at = _parse_time(args.time) if args.time else None
    with _ledger(settings) as ledger:
        view = ledger.as_of(_customer_id(args.id), version=args.version, at=at)
    _emit(args, view.to_json(), customer_text(view))
    return 0


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        certificate = ledger.erase(
            _customer_id(args.id),
            actor=settings.actor,
            legal_basis=args.legal_basis,
            reason=args.reason,
        )
    print(certificate.to_json())
    return 0


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
        public_key = LedgerSigner.load_or_create(
            settings.resolved_signing_key_file
        ).public_key_pem()
    ok = certificate.verify(public_key)
    _emit(args, {"valid": ok}, "certificate is valid" if ok else "certificate is NOT valid")
    return 0 if ok else EXIT_INTEGRITY


def cmd_public_key(args: argparse.Namespace, settings: Settings) -> int:
    signer = LedgerSigner.load_or_create(settings.resolved_signing_key_file)
    _emit(
        args,
        {"key_id": signer.key_id(), "public_key_pem": signer.public_key_pem()},
        signer.public_key_pem().rstrip(),
    )
    return 0


def cmd_rotate_kek(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        provider = ledger.keys.store.provider
        if not isinstance(provider, RotatableKekProvider):
            raise ConfigError("the configured KEK provider rotates its keys itself")
        old = provider.active_kek_id()
        new = provider.rotate()
        count = ledger.keys.store.rewrap_all()
        provider.retire(old)
    _emit(
        args,
        {"retired": old, "active": new, "rewrapped": count},
        f"re-wrapped {count} data keys under KEK {new}; KEK {old} retired",
    )
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ledger.cli.demo import run_demo

    return run_demo(settings)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        help="store URL (overrides LEDGER_STORE): sqlite:///path or postgresql://user@host:port/db",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--actor", help="who is acting (overrides LEDGER_ACTOR)")
    return common


def _command_options(parser: argparse.ArgumentParser, *, versioned: bool = True) -> None:
    parser.add_argument("--reason", help="non-personal reason code or note (stored readable)")
    if versioned:
        parser.add_argument(
            "--expected-version",
            type=int,
            metavar="N",
            help="refuse unless the customer is still at version N",
        )


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="ledger",
        description="Event-sourced customer ledger with per-customer encryption and erasure.",
        epilog="Settings come from LEDGER_* environment variables; see the README.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = add("register", cmd_register, "register a new customer and print its id")
    p.add_argument("--given-name", dest="given_name")
    p.add_argument("--family-name", dest="family_name")
    p.add_argument("--email", action="append", metavar="ADDRESS")
    p.add_argument(
        "--phone",
        action="append",
        metavar="NUMBER",
        help="international (+CC...) or national in --country / LEDGER_DEFAULT_REGION",
    )
    p.add_argument("--birth-date", dest="birth_date", metavar="YYYY-MM-DD")
    for option in ADDRESS_OPTIONS:
        p.add_argument(
            "--" + option.replace("_", "-"),
            dest=option,
            metavar="CC" if option == "country" else "TEXT",
        )
    p.add_argument("--external-id", dest="external_id", action="append", metavar="SCHEME:VALUE")
    p.add_argument("--owner")
    p.add_argument("--locale", metavar="TAG", help="BCP 47, e.g. en-GB")
    p.add_argument("--tag", action="append")
    _command_options(p, versioned=False)

    p = add("change", cmd_change, "change profile fields (one event carrying only what changed)")
    p.add_argument("id")
    p.add_argument(
        "--set",
        action="append",
        required=True,
        metavar="FIELD=VALUE",
        help="e.g. emails=a@x.org,b@y.org  phones=+4930123456  "
        'external_id:CRM=42  addresses=\'[{"country":"DE"}]\'  '
        "birth_date=  (empty clears)",
    )
    _command_options(p)

    p = add("assign-owner", cmd_assign_owner, "make a salesperson or team responsible")
    p.add_argument("id")
    p.add_argument("owner")
    _command_options(p)

    p = add("mark-verified", cmd_mark_verified, "record that a review confirmed the data")
    p.add_argument("id")
    _command_options(p)

    p = add("show", cmd_show, "show a customer's current state")
    p.add_argument("id")

    p = add("history", cmd_history, "list every event of a customer")
    p.add_argument("id")

    p = add("as-of", cmd_as_of, "show a customer as it stood at a time or version")
    p.add_argument("id")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--time", metavar="ISO8601", help="e.g. 2026-01-31T12:00:00Z")
    when.add_argument("--version", type=int, metavar="N")

    p = add("erase", cmd_erase, "erase a customer (destroy its key) and print a signed certificate")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p.add_argument(
        "--legal-basis", dest="legal_basis", required=True, help="e.g. 'GDPR Art. 17(1)(a)'"
    )

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
    add("demo", cmd_demo, "run the whole story once on the configured (default: embedded) store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.store:
            settings = settings.with_store(args.store)
        if args.actor:
            settings = replace(settings, actor=args.actor)
        settings.store  # noqa: B018  (parse early: a bad URL is the user's mistake)
        handler: Handler = args.handler
        return handler(args, settings)
    except ValidationFailed as exc:
        print(f"ledger: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except CertificateFormatError as exc:
        print(f"ledger: error: not a certificate: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (ConfigError, KeyFileError, InsecureKeyFileError, SigningKeyError) as exc:
        print(f"ledger: configuration error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (PersistenceError, psycopg.OperationalError) as exc:
        print(f"ledger: store unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (StaleVersion, CustomerErasedError) as exc:
        print(f"ledger: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except LedgerError as exc:
        print(f"ledger: error: {exc}", file=sys.stderr)
        return 1
    except SealError as exc:
        print(f"ledger: integrity error: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY


if __name__ == "__main__":
    sys.exit(main())
