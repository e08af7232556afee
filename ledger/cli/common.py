"""What every group of commands shares: the handler signature, output and id parsing."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol
from uuid import UUID

from ledger.application import CustomerLedger
from ledger.audit.access_log import DEFAULT_PURPOSE, MAX_CUSTOMERS
from ledger.audit.read_alerts import ReadRateMonitor
from ledger.bootstrap import open_ledger
from ledger.cli.render import dumps
from ledger.config import Settings
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.text import printable

log = logging.getLogger("ledger.audit")

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
    """The one way command output reaches the terminal. Text keeps the renderer's line
    breaks and nothing else a terminal could act on (escape sequences, carriage returns,
    bidirectional overrides: see `ledger.domain.text`); JSON escapes them by nature."""
    print(dumps(data) if args.json else printable(text, keep_newlines=True))


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


def os_user() -> str:
    """The account the operating system runs this command as, recorded with every read next
    to `--actor`: the actor is whatever the caller typed, the account is what the machine
    vouches for. Taken from the process's uid, not $USER or $LOGNAME (the caller sets
    those too)."""
    uid = os.geteuid()
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):  # no passwd entry (containers run as bare uids)
        return f"uid {uid}"


def read_as(args: argparse.Namespace) -> dict[str, str]:
    """The access-record attributes of a CLI read besides principal and purpose."""
    return {"os_user": os_user(), "method": f"cli:{args.command}"}


def record_read(
    ledger: CustomerLedger,
    args: argparse.Namespace,
    settings: Settings,
    customer_ids: Iterable[UUID | str],
    fields: Iterable[str],
    masked: Sequence[dict[str, Any]] = (),
) -> None:
    """Record that this command is about to print `fields` of `customer_ids` (durable when
    it returns; one transaction however many records the customers need). Every command
    that prints personal data calls this, or a `PurposeReads.read*` method, before
    printing. `masked`: what the data policy left out, and why (`masked_record`)."""
    ids = list(dict.fromkeys(str(c) for c in customer_ids))
    names = sorted(set(fields))
    if not ids or not (names or masked):
        return
    purpose: str = getattr(args, "purpose", DEFAULT_PURPOSE)
    access_log = ledger.access_log
    events: list[Any] = []
    for start in range(0, len(ids), MAX_CUSTOMERS):
        record = access_log.new_record(
            settings.actor,
            purpose,
            ids[start : start + MAX_CUSTOMERS],
            names,
            masked=masked,
            **read_as(args),
        )
        events += record.collect_events()
    events += bulk_read_alert(settings, ids)
    access_log.commit(events)


def bulk_read_alert(settings: Settings, customer_ids: list[str]) -> list[Any]:
    """One command printing more customers than LEDGER_READ_ALERT_RATE (a whole-list dump)
    raises the same alert as the API's read-rate rule: an `AccessAlert.Raised` event stored
    with the read's own records, and one log line naming the principal only. A command
    counts its own reads (each CLI run is its own process); the server's rule counts across
    calls and feeds the `ledger_access_alerts` metric."""
    monitor = ReadRateMonitor(settings.read_alert_rate, settings.read_alert_window_seconds)
    alert = monitor.observe(settings.actor, customer_ids)
    if alert is None:
        return []
    log.warning(
        "read-rate alert: %s read %d customers in one command (rate %d)",
        settings.actor,
        len(customer_ids),
        monitor.rate,
        extra={"fields": {"event": "read_rate_alert", "principal": settings.actor}},
    )
    return list(alert.collect_events())
