"""The API's commands: `ledger serve` runs the gRPC server; `ledger token issue|revoke`
makes and withdraws bearer tokens for the local setup."""

from __future__ import annotations

import argparse
from dataclasses import replace

from ledger.api.api_store import open_api_store
from ledger.api.authz import ROLES, Role
from ledger.api.tokens import PURPOSE, TokenError, check_principal, issue_token, parse_ttl
from ledger.cli.common import AddCommand, emit
from ledger.config import Settings
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.signing import LedgerSigner
from ledger.store_state import require_ledger

DEFAULT_TTL = "8h"


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the other commands need not load gRPC.
    from ledger.api.server import announce_line, serve
    from ledger.observability import logs

    logs.configure(settings.api.log_format)
    if args.listen:
        settings = replace(settings, api=replace(settings.api, listen=args.listen))
    if args.metrics_listen:
        settings = replace(settings, api=replace(settings.api, metrics_listen=args.metrics_listen))
    return serve(settings, announce=lambda api: announce_line(api, settings, as_json=args.json))


def _principal(text: str, option: str) -> str:
    try:
        return check_principal(text)
    except TokenError as exc:
        raise ValidationFailed([FieldViolation(option, str(exc))]) from None


def cmd_token_issue(args: argparse.Namespace, settings: Settings) -> int:
    principal = _principal(args.principal, "--principal")
    violations = [
        FieldViolation("--role", f"unknown role; one of {', '.join(r.value for r in Role)}")
        for role in args.role
        if role not in ROLES
    ]
    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        violations.append(FieldViolation("--ttl", str(exc)))
        ttl = None
    violations += [
        FieldViolation("--purpose", "a data-use code such as marketing or essential.service, or *")
        for purpose in args.purpose or []
        if not (purpose == "*" or PURPOSE.fullmatch(purpose))
    ]
    if violations:
        raise ValidationFailed(violations[:2])
    assert ttl is not None
    # Never a new key here: the server would not know it (see `ledger.api.server`).
    signer = LedgerSigner.load(settings.resolved_token_key_file, setting="LEDGER_TOKEN_KEY_FILE")
    purposes = args.purpose or None
    token = issue_token(signer, principal, args.role, ttl, purposes=purposes)
    emit(
        args,
        {
            "token": token,
            "principal": principal,
            "roles": sorted(set(args.role)),
            "purposes": sorted(set(purposes)) if purposes else "role defaults",
            "ttl_seconds": int(ttl.total_seconds()),
        },
        token,
    )
    return 0


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    principal = _principal(args.principal, "PRINCIPAL")
    require_ledger(settings)  # a mistyped store gets no new, empty ledger
    with open_api_store(settings) as store:
        moment = store.revoke(principal)
    emit(
        args,
        {"principal": principal, "revoked_at": moment.isoformat()},
        f"revoked every credential of {principal} issued up to {moment.isoformat()}; "
        "it is refused from its next call",
    )
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    handler = args.token_handler
    result: int = handler(args, settings)
    return result


def add_commands(add: AddCommand) -> None:
    p = add("serve", cmd_serve, "run the gRPC API server until SIGTERM or Ctrl-C")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to serve on (default LEDGER_LISTEN, else 127.0.0.1:50051; port 0 picks one)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default LEDGER_METRICS_LISTEN, "
        "else off; e.g. 127.0.0.1:9464)",
    )

    p = add("token", cmd_token, "issue or revoke API bearer tokens")
    sub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = sub.add_parser(
        "issue", help="print a signed bearer token", description="print a signed bearer token"
    )
    issue.set_defaults(token_handler=cmd_token_issue)
    issue.add_argument("--principal", required=True, help="who the token speaks for")
    issue.add_argument(
        "--role",
        action="append",
        required=True,
        metavar="ROLE",
        help=f"repeatable: {', '.join(r.value for r in Role)}",
    )
    issue.add_argument(
        "--purpose",
        action="append",
        metavar="PURPOSE",
        help="repeatable: a purpose the principal may act for (covers the purposes under it; "
        "* for all); default: its roles' purposes (see docs/consent-and-purpose.md)",
    )
    issue.add_argument(
        "--ttl", default=DEFAULT_TTL, help=f"lifetime, e.g. 30m, 8h, 7d (default {DEFAULT_TTL})"
    )
    revoke = sub.add_parser(
        "revoke",
        help="refuse every credential of a principal issued up to now",
        description="refuse every credential (tokens, client certificates) of a principal "
        "issued up to now, from its next call",
    )
    revoke.set_defaults(token_handler=cmd_token_revoke)
    revoke.add_argument("principal", metavar="PRINCIPAL")
    for action in (issue, revoke):
        action.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        action.add_argument("--store", default=argparse.SUPPRESS, help="store URL")
