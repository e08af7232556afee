"""Between messages and the domain: resource names, customers, changes, events.

Inputs are turned into the same plain mappings the CLI produces, so every rule about what a
valid value is stays in `ledger.domain.profile`; only the shape is decided here. Outputs are
built from the read views, with personal data left out (REDACTED) for callers who may not
read it and shown as ERASED once the key is gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2
from google.type import date_pb2

from ledger.api.errors import ApiError
from ledger.crypto_shred.mapper import SEALED
from ledger.domain.customer import Customer as CustomerAggregate
from ledger.domain.erased import ErasedValue
from ledger.domain.profile import ADDRESS_FIELDS, PERSONAL_FIELDS, PUBLIC_FIELDS
from ledger.v1 import resources_pb2
from ledger.views import CustomerView, erased_fields

Customer = resources_pb2.Customer
LedgerEvent = resources_pb2.LedgerEvent
PDS = resources_pb2.PersonalDataState

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_NAME = re.compile(f"customers/({_UUID})")
_ETAG = re.compile(r"[1-9][0-9]{0,17}")

TEXT_FIELDS = ("given_name", "family_name", "locale")
LIST_FIELDS = ("emails", "phones", "tags")
CHANGEABLE = (*PERSONAL_FIELDS, *PUBLIC_FIELDS)
# Output-only and identifying fields: ignored in an update mask (AIP-161, AIP-203).
IGNORED_IN_MASK = frozenset(
    {
        "name",
        "etag",
        "state",
        "personal_data_state",
        "version",
        "create_time",
        "update_time",
        "verify_time",
        "erase_time",
        "merged_into",
        "masked_fields",
    }
)


# Names and etags --------------------------------------------------------------------------


def customer_name(customer_id: UUID | str) -> str:
    return f"customers/{customer_id}"


def parse_name(name: str, field: str = "name") -> UUID:
    match = _NAME.fullmatch(name)
    if not match:
        reason = "required" if not name else "must be customers/{id} with a lower-case UUID"
        raise ApiError.invalid(field, reason)
    return UUID(match.group(1))


def parse_etag(etag: str, field: str) -> int | None:
    """Empty: no concurrency check. Otherwise the version read (AIP-154)."""
    if not etag:
        return None
    if not _ETAG.fullmatch(etag):
        raise ApiError.invalid(field, "not an etag of this API (send back the etag you read)")
    return int(etag)


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def from_timestamp(stamp: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise ApiError.invalid(field, "not a valid time") from None


# Customers out ----------------------------------------------------------------------------


def _date(text: str) -> date_pb2.Date:
    year, month, day = (int(part) for part in text.split("-"))
    return date_pb2.Date(year=year, month=month, day=day)


def _state(view: CustomerView) -> resources_pb2.Customer.State.ValueType:
    if view.is_erased:
        return Customer.ERASED
    return Customer.MERGED if view.merged_into else Customer.ACTIVE


def customer_message(view: CustomerView, *, personal: bool) -> resources_pb2.Customer:
    message = Customer(
        name=customer_name(view.id),
        locale=view.locale or "",
        tags=view.tags,
        owner=view.owner or "",
        state=_state(view),
        version=view.version,
        etag=str(view.version),
        create_time=timestamp(view.created_at),
        update_time=timestamp(view.updated_at),
        verify_time=timestamp(view.verified_at),
        erase_time=timestamp(view.erased_at),
        merged_into=customer_name(view.merged_into) if view.merged_into else "",
    )
    if view.is_erased:
        message.personal_data_state = PDS.PERSONAL_DATA_STATE_ERASED
    elif not personal:
        message.personal_data_state = PDS.PERSONAL_DATA_STATE_REDACTED
    else:
        message.personal_data_state = PDS.PERSONAL_DATA_STATE_AVAILABLE
        assert isinstance(view.personal, dict)
        _fill_personal(message, view.personal)
        message.erased_fields.extend(erased_fields(view.personal))
    return message


def _fill_personal(message: resources_pb2.Customer, data: dict[str, Any]) -> None:
    message.given_name = data.get("given_name") or ""
    message.family_name = data.get("family_name") or ""
    message.emails.extend(data.get("emails") or [])
    message.phones.extend(data.get("phones") or [])
    for address in data.get("addresses") or []:
        message.addresses.add(**{k: v for k, v in address.items() if k in ADDRESS_FIELDS and v})
    if data.get("birth_date"):
        message.birth_date.CopyFrom(_date(data["birth_date"]))
    message.external_ids.update(data.get("external_ids") or {})


def add_masked(message: resources_pb2.Customer, hidden: dict[str, str]) -> None:
    """Say which personal fields the data policy left out of this answer, and why."""
    for field, reason in sorted(hidden.items()):
        message.masked_fields.add(field=field, reason=reason)


def personal_fields_shown(message: resources_pb2.Customer) -> list[str]:
    """The personal fields a response actually carries (for the access log)."""
    shown = [name for name in PERSONAL_FIELDS if name != "birth_date" and getattr(message, name)]
    if message.HasField("birth_date"):
        shown.append("birth_date")
    return sorted(shown)


def apply_read_mask(
    message: resources_pb2.Customer, mask: field_mask_pb2.FieldMask, field: str = "read_mask"
) -> resources_pb2.Customer:
    if not mask.paths:
        return message
    if not mask.IsValidForDescriptor(Customer.DESCRIPTOR):
        raise ApiError.invalid(field, "names a field Customer does not have")
    trimmed = Customer()
    mask.MergeMessage(message, trimmed)
    return trimmed


# Customers in -----------------------------------------------------------------------------


def _date_text(date: date_pb2.Date) -> str:
    """Any numbers become text the domain's date rule judges ("0000-00-00" is not a date)."""
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}"


def _address(address: resources_pb2.Address) -> dict[str, str]:
    return {name: getattr(address, name) for name in ADDRESS_FIELDS if getattr(address, name)}


def _value(message: resources_pb2.Customer, name: str) -> Any:
    """The field's value as the domain takes it; None when empty (which clears on update)."""
    if name in TEXT_FIELDS:
        return getattr(message, name) or None
    if name in LIST_FIELDS:
        return list(getattr(message, name)) or None
    if name == "addresses":
        return [_address(a) for a in message.addresses] or None
    if name == "birth_date":
        return _date_text(message.birth_date) if message.HasField("birth_date") else None
    if name == "external_ids":
        return dict(message.external_ids) or None
    raise KeyError(name)  # pragma: no cover - callers pass CHANGEABLE names only


def registration_profile(message: resources_pb2.Customer) -> dict[str, Any]:
    profile = {name: _value(message, name) for name in CHANGEABLE}
    if message.owner:
        profile["owner"] = message.owner
    return {name: value for name, value in profile.items() if value is not None}


def update_changes(
    message: resources_pb2.Customer, mask: field_mask_pb2.FieldMask | None
) -> dict[str, Any]:
    """The changes an update asks for (AIP-134): the masked fields (empty clears), all
    populated fields when no mask is given, every changeable field for "*"."""
    if mask is None or not mask.paths:
        return {n: v for n in CHANGEABLE if (v := _value(message, n)) is not None}
    if list(mask.paths) == ["*"]:
        return {name: _value(message, name) for name in CHANGEABLE}
    changes: dict[str, Any] = {}
    for index, path in enumerate(mask.paths):
        where = f"update_mask.paths[{index}]"
        if path in IGNORED_IN_MASK:
            continue
        if path in CHANGEABLE:
            changes[path] = _value(message, path)
        elif path.startswith("external_ids.") and len(path) > len("external_ids."):
            scheme = path[len("external_ids.") :]
            changes[f"external_id:{scheme}"] = message.external_ids.get(scheme) or None
        elif path == "owner":
            raise ApiError.invalid(where, "owner is changed with AssignOwner")
        else:
            raise ApiError.invalid(where, "not a field UpdateCustomer can change")
    return changes


# Events out -------------------------------------------------------------------------------


_PLAIN = (str, int, float, bool, type(None))


def _json_safe(value: Any) -> Any:
    """JSON types pass as they are (the common case, cheap); anything else becomes text
    (a field whose data category was destroyed: "erased")."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, ErasedValue):
        return "erased"
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(_json_safe(data))
    return message


def value(data: Any) -> struct_pb2.Value:
    """Any JSON-like value (None becomes null_value)."""
    holder = struct_pb2.Struct()
    holder.update({"v": _json_safe(data)})
    result = struct_pb2.Value()
    result.CopyFrom(holder.fields["v"])
    return result


_ENVELOPE = ("originator_id", "originator_version", "timestamp", "originator_topic")


def event_message(
    event: Any, *, position: int = 0, show_personal: bool
) -> resources_pb2.LedgerEvent:
    """Any event of the log. `event` was decoded with the encrypting mapper when personal
    data may be shown, else with the plain one (its personal data still sealed)."""
    attributes = dict(vars(event))
    for name in _ENVELOPE:
        attributes.pop(name, None)
    personal = attributes.pop("personal", None)
    attributes.pop(SEALED, None)
    attributes.update(attributes.pop("public", None) or {})
    actor = attributes.pop("actor", "") or ""
    reason = attributes.pop("reason", "") or ""
    stream_id = str(event.originator_id)
    version = int(event.originator_version)
    is_customer = isinstance(event, CustomerAggregate.Event)
    message = LedgerEvent(
        name=f"customers/{stream_id}/events/{version}" if is_customer else "",
        position=position,
        stream_id=stream_id,
        stream_version=version,
        customer=customer_name(stream_id) if is_customer else "",
        event_type=type(event).__name__,
        event_time=timestamp(event.timestamp),
        actor=str(actor),
        reason=str(reason),
        details=struct(attributes),
    )
    if not getattr(type(event), "personal_attributes", ()):
        message.personal_data_state = PDS.PERSONAL_DATA_STATE_NONE
    elif not show_personal:
        message.personal_data_state = PDS.PERSONAL_DATA_STATE_REDACTED
    elif isinstance(personal, ErasedValue) or personal is None:
        message.personal_data_state = PDS.PERSONAL_DATA_STATE_ERASED
    else:
        message.personal_data_state = PDS.PERSONAL_DATA_STATE_AVAILABLE
        message.personal_data.CopyFrom(struct(personal))
    return message


def personal_fields_in_event(message: resources_pb2.LedgerEvent) -> list[str]:
    return sorted(message.personal_data.fields) if message.HasField("personal_data") else []


def names(customer_ids: Iterable[UUID | str]) -> list[str]:
    return [customer_name(c) for c in customer_ids]
