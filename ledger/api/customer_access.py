"""Loading customers for a call under the record-level rule, and shaping the response for
the caller: masking, read masks, and the access record made before anything is sent.
Every servicer that returns a customer goes through here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from google.protobuf import field_mask_pb2

from ledger.api import convert
from ledger.api.authz import AccessDenied
from ledger.api.rpc import Call
from ledger.application import CustomerLedger
from ledger.consent.reads import mask, masked_record
from ledger.domain.errors import CustomerNotFound
from ledger.v1 import resources_pb2
from ledger.views import CustomerView


@dataclass
class CustomerAccess:
    """Loads customers for a call, applying the record-level rule, and shapes responses
    for the caller (masking, read masks, access records). Shared by all servicers."""

    ledger: CustomerLedger

    def load(self, call: Call, customer_id: UUID) -> CustomerView:
        """The customer if the caller's roles reach it. For a caller limited to its own
        customers, one that does not exist is refused like another owner's (AIP-211: the
        answer must not reveal whether someone else's customer exists)."""
        try:
            view = self.ledger.get(customer_id)
        except CustomerNotFound:
            if call.grant.owner_filter is not None:
                raise AccessDenied(
                    f"{call.method} on customer {customer_id} is limited to its owner",
                    (str(customer_id),),
                ) from None
            raise
        call.grant.check_record(str(customer_id), view.owner)
        return view

    def respond(
        self,
        call: Call,
        view: CustomerView,
        read_mask: field_mask_pb2.FieldMask | None = None,
    ) -> resources_pb2.Customer:
        """The customer as this caller may see it (its roles, and its purpose under the data
        policy); the read is recorded, with what was masked and why, before it is sent."""
        message, masked = _shaped(call, view)
        if read_mask is not None:
            message = convert.apply_read_mask(message, read_mask)
        call.record_access(
            [convert.customer_name(view.id)], convert.personal_fields_shown(message), masked
        )
        return message

    def respond_to_command(
        self, call: Call, command: Callable[[Callable[[CustomerView], list[Any]]], CustomerView]
    ) -> resources_pb2.Customer:
        """Run a command that answers with the customer it wrote, recording that read in
        the command's own transaction: `command(also)` must store the events `also(view)`
        returns with the command's events (one commit instead of two, and the record is
        durable exactly when the customer is). Falls back to `respond` after the command
        when the access log hands out no events."""
        shaped: dict[str, Any] = {}

        def also(view: CustomerView) -> list[Any]:
            # A customer registered this instant has no consent yet: a consent-based
            # purpose sees it masked like any other.
            message, masked = _shaped(call, view)
            bundle = call.access_events(
                [convert.customer_name(view.id)], convert.personal_fields_shown(message), masked
            )
            if bundle is None:
                return []
            shaped["message"], shaped["undo"] = message, bundle[1]
            return bundle[0]

        try:
            view = command(also)
        except BaseException:
            if "undo" in shaped:
                shaped["undo"]()
            raise
        if "message" in shaped:
            message: resources_pb2.Customer = shaped["message"]
            return message
        return self.respond(call, view)

    def respond_many(
        self,
        call: Call,
        views: Sequence[CustomerView],
        read_mask: field_mask_pb2.FieldMask | None = None,
    ) -> list[resources_pb2.Customer]:
        """A page of customers, each masked for the caller; the page's reads are recorded
        as one access record (the customers whose personal fields it carries, and those
        fields) before it is sent."""
        messages = []
        fields: set[str] = set()
        readable = [v.id for v in views if call.grant.may_read_personal(v.owner)]
        masks = call.masks(readable) if readable else {}
        recorded: list[UUID] = []
        for view in views:
            personal = call.grant.may_read_personal(view.owner)
            hidden = masks.get(view.id, {}) if personal and not view.is_erased else {}
            message = convert.customer_message(mask(view, hidden), personal=personal)
            convert.add_masked(message, hidden)
            if read_mask is not None:
                message = convert.apply_read_mask(message, read_mask)
            shown = convert.personal_fields_shown(message)
            if shown or hidden:
                recorded.append(view.id)
                fields.update(shown)
            messages.append(message)
        masked = masked_record({c: masks[c] for c in recorded if masks.get(c)}, recorded)
        call.record_access([convert.customer_name(c) for c in recorded], sorted(fields), masked)
        return messages


def _shaped(call: Call, view: CustomerView) -> tuple[resources_pb2.Customer, list[dict[str, Any]]]:
    """The customer message for this caller, and the access record's `masked` entries."""
    personal = call.grant.may_read_personal(view.owner)
    hidden = call.masks([view.id]).get(view.id, {}) if personal and not view.is_erased else {}
    message = convert.customer_message(mask(view, hidden), personal=personal)
    convert.add_masked(message, hidden)
    return message, masked_record({view.id: hidden}) if hidden else []
