"""What every group of commands shares: the handler signature, output and id parsing."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Protocol
from uuid import UUID

from ledger.application import CustomerLedger
from ledger.bootstrap import open_ledger
from ledger.cli.render import dumps
from ledger.config import Settings
from ledger.domain.errors import FieldViolation, ValidationFailed

Handler = Callable[[argparse.Namespace, Settings], int]


class AddCommand(Protocol):
    """Adds one subcommand (with the common --store/--json/--actor options) and returns its
    parser so the caller can add the command's own arguments."""

    def __call__(self, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser: ...


def parse_customer_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise ValidationFailed([FieldViolation("id", "not a customer id (UUID)")]) from None


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(dumps(data) if args.json else text)


def open_for(settings: Settings, *, create: bool = False) -> CustomerLedger:
    """Open the configured ledger. Only the commands that add customers (register,
    import) pass `create`: the others refuse a store that holds no ledger (a mistyped
    path) instead of creating an empty one."""
    return open_ledger(settings, create=create)


def command_options(parser: argparse.ArgumentParser, *, versioned: bool = True) -> None:
    parser.add_argument("--reason", help="non-personal reason code or note (stored readable)")
    if versioned:
        parser.add_argument(
            "--expected-version",
            type=int,
            metavar="N",
            help="refuse unless the customer is still at version N",
        )
