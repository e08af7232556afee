"""The `ledger` command line.

User mistakes (bad input, unknown ids, stale versions, erased customers, bad settings) end
with one line on stderr and a non-zero exit code, never a traceback. Output is readable
text, or JSON with `--json`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

import psycopg
from eventsourcing.persistence import PersistenceError

from ledger.cli import (
    api_commands,
    audit_commands,
    backup_commands,
    compliance_commands,
    consent_commands,
    customer_commands,
    duplicate_commands,
    import_commands,
    merge_commands,
    policy_commands,
    projection_commands,
)
from ledger.cli.common import Handler, emit
from ledger.config import ConfigError, Settings
from ledger.crypto_shred.certificate import CertificateFormatError
from ledger.crypto_shred.kek import KeyFileError, KeyUnwrapError
from ledger.crypto_shred.keyring import KeyMissing
from ledger.crypto_shred.keystore import KeyStoreLost
from ledger.crypto_shred.mapper import SealError
from ledger.domain.errors import (
    CustomerErasedError,
    CustomerMergedError,
    CustomerOnHold,
    HoldRefused,
    LedgerError,
    LikelyDuplicate,
    MergeRefused,
    StaleVersion,
    ValidationFailed,
)
from ledger.signing import InsecureKeyFileError, SigningKeyError

EXIT_INVALID = 2
EXIT_REFUSED = 3
EXIT_INTEGRITY = 4
EXIT_HELD = 5  # a legal hold refused an erasure or destruction

# Each group module adds its subcommands; a new area of the product adds one line here.
COMMAND_GROUPS = (customer_commands, compliance_commands, audit_commands, projection_commands,
                  merge_commands, import_commands, api_commands, duplicate_commands,
                  backup_commands, policy_commands, consent_commands)  # fmt: skip


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    """Create the ledger (its tables and secret files) if there is none yet, so that
    other commands and processes (`ledger project`, more servers) can start on it; on an
    existing ledger, check that its secrets are where the settings say."""
    from ledger.bootstrap import open_ledger
    from ledger.store_state import describe, secrets_of

    with open_ledger(settings, create=True):
        pass
    files = {secret.setting: str(secret.path) for secret in secrets_of(settings)}
    store = describe(settings.store)
    lines = [f"ledger ready at {store}; its secret files:"]
    lines += [f"  {setting}: {path}" for setting, path in files.items()]
    emit(args, {"store": store, "secret_files": files}, "\n".join(lines))
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

    for group in COMMAND_GROUPS:
        group.add_commands(add)
    add(
        "init",
        cmd_init,
        "create the configured ledger and its secret files if there is none (register, "
        "import and serve do too; other commands refuse a store with no ledger)",
    )
    add(
        "demo",
        cmd_demo,
        "run the whole story through the gRPC API (an in-process server on a loopback port) "
        "on the configured (default: embedded) store",
    )
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
    except CustomerOnHold as exc:
        print(f"ledger: refused: {exc}", file=sys.stderr)
        return EXIT_HELD
    except (
        StaleVersion, CustomerErasedError, CustomerMergedError, MergeRefused, LikelyDuplicate,
        HoldRefused,
    ) as exc:  # fmt: skip
        print(f"ledger: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except LedgerError as exc:
        print(f"ledger: error: {exc}", file=sys.stderr)
        return 1
    except (SealError, KeyMissing, KeyStoreLost, KeyUnwrapError) as exc:
        print(f"ledger: integrity error: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY


if __name__ == "__main__":
    sys.exit(main())
