"""The encrypting mapper: personal data is sealed before it reaches any store.

Each event class declares `personal_attributes`; those attributes are serialised together,
encrypted with AES-256-GCM under the customer's own data key, and stored as one `_sealed`
value beside the readable metadata (event type, time, actor, reason, changed field names).
The event's envelope (customer id, version, topic) is the associated data, so a sealed value
copied into another event or another customer's stream fails to open.

Customers registered with category keys (`ledger.crypto_shred.category_keys`) get the
second format: each personal field is sealed under the key of its data category, so one
category can be destroyed and the rest still opens (`_sealed` then has `"v": 2`, a base
part under the customer key holding the attributes' shape and anything without a category,
and one part per category present). A part whose category the log says is destroyed comes
back as `ERASED` field by field, without any key being used. Events of customers with one
key keep (and are still written in) the first format.

When the log says the customer is erased the sealed attributes come back as `ERASED`
without any key being used (`to_domain_event(..., erased=True)` when the caller has the
Erased event in hand, else the key ring's log-derived answer): replay, history and
rebuilds keep working and never show old values, whatever a restored key store holds. A
key gone without an erasure raises `KeyMissing` (an integrity failure).
"""

from __future__ import annotations

import base64
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from ledger.crypto_shred.category_keys import key_category_of
from ledger.crypto_shred.keyring import KeyRing
from ledger.crypto_shred.keystore import DataKey
from ledger.crypto_shred.sealing import SealOpenError, open_sealed, seal, seal_many
from ledger.domain.erased import ERASED

SEALED = "_sealed"
AAD_VERSION = b"ledger.sealed.v1"
AAD_VERSION_2 = b"ledger.sealed.v2"
BASE_PART = ""  # the v2 part under the customer key


class SealError(Exception):
    """Stored personal data cannot be opened although its key exists: the ciphertext was
    altered or moved from another event. Names ids only, never data."""


class UnsealedEventError(Exception):
    """An event class without a `personal_attributes` declaration reached the store.
    Storing it could leak personal data in plaintext, so the mapper refuses."""


class NoKeyError(Exception):
    """Personal data was about to be written for a customer without a live key."""


def envelope(originator_id: UUID | str, version: int, topic: str) -> bytes:
    """The associated data binding a ciphertext to exactly one event."""
    return b"|".join(
        [AAD_VERSION, str(originator_id).encode(), str(version).encode(), topic.encode()]
    )


def part_envelope(originator_id: UUID | str, version: int, topic: str, category: str) -> bytes:
    """The associated data of one v2 part: one event and one category (a part moved to
    another category's slot does not open)."""
    return b"|".join(
        [
            AAD_VERSION_2,
            str(originator_id).encode(),
            str(version).encode(),
            topic.encode(),
            category.encode(),
        ]
    )


def fields_of_key_category(category: str) -> tuple[str, ...]:
    from ledger.policy.classification import FIELDS

    return tuple(e.field for e in FIELDS if key_category_of(e.field) == category)


class EncryptingMapper(Mapper[UUID]):
    def __init__(self, transcoder: Transcoder, keys: KeyRing) -> None:
        super().__init__(transcoder=transcoder)
        self.keys = keys

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        cls = type(domain_event)
        names: tuple[str, ...] | None = getattr(cls, "personal_attributes", None)
        if names is None:
            raise UnsealedEventError(f"{get_topic(cls)} declares no personal_attributes")
        if not names:
            return super().to_stored_event(domain_event)
        topic = get_topic(cls)
        state = dict(vars(domain_event))
        customer_id = state["originator_id"]
        version = state["originator_version"]
        secret = {name: state.pop(name) for name in names}
        key = self.keys.get(customer_id)
        if key is None:
            raise NoKeyError(f"customer {customer_id} has no live data key")
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        if key.bundled:
            state[SEALED] = self._seal_parts(key, secret, customer_id, version, topic)
            return self._store(topic, state)
        blob = seal(key.key, self.transcoder.encode(secret), envelope(customer_id, version, topic))
        state[SEALED] = {
            "key_id": key.key_id,
            "data": base64.b64encode(blob).decode("ascii"),
        }
        return self._store(topic, state)

    def _seal_parts(
        self, key: DataKey, secret: dict[str, Any], customer_id: UUID, version: int, topic: str
    ) -> dict[str, Any]:
        """The v2 format: each field under its category's key; the base part (customer
        key) keeps each attribute's shape (`{}` for a mapping) and uncategorised values."""
        groups: dict[str, dict[str, Any]] = {BASE_PART: {}}
        for name, value in secret.items():
            if not isinstance(value, dict):
                groups[BASE_PART][name] = value
                continue
            groups[BASE_PART][name] = {}
            for field_name, field_value in value.items():
                category = key_category_of(field_name) or BASE_PART
                groups.setdefault(category, {}).setdefault(name, {})[field_name] = field_value
        # The event's part of the associated data, computed once for all parts.
        prefix = part_envelope(customer_id, version, topic, "")
        order = sorted(groups)  # BASE_PART ("") first
        items: list[tuple[bytes, bytes, bytes]] = []
        key_ids: list[str] = []
        for category in order:
            if category == BASE_PART:
                part_key, key_id = key.key, key.key_id
            else:
                category_key = key.categories.get(category)
                if category_key is None:
                    raise NoKeyError(
                        f"customer {customer_id} has no live key for category {category}"
                    )
                part_key, key_id = category_key.key, category_key.key_id
            items.append(
                (part_key, self.transcoder.encode(groups[category]), prefix + category.encode())
            )
            key_ids.append(key_id)
        blobs = seal_many(items)
        parts = {
            category: {
                "key_id": key_id,
                "attrs": sorted(groups[category]),
                "data": base64.b64encode(blob).decode("ascii"),
            }
            for category, key_id, blob in zip(order[1:], key_ids[1:], blobs[1:], strict=True)
        }
        return {
            "v": 2,
            "key_id": key.key_id,
            "data": base64.b64encode(blobs[0]).decode("ascii"),
            "parts": parts,
        }

    def _store(self, topic: str, state: dict[str, Any]) -> StoredEvent:
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=topic,
            state=self.transcoder.encode(state),
        )

    def to_domain_event(
        self, stored_event: StoredEvent, *, erased: bool = False
    ) -> DomainEventProtocol[UUID]:
        """`erased`: the caller read the customer's Erased event from the log (in the same
        stream), so no key is even looked up."""
        domain_event = super().to_domain_event(stored_event)
        attributes: dict[str, Any] = domain_event.__dict__
        sealed = attributes.pop(SEALED, None)
        names: tuple[str, ...] = getattr(type(domain_event), "personal_attributes", ())
        if sealed is None:
            if names:
                raise SealError(
                    f"event {stored_event.originator_id} v{stored_event.originator_version} "
                    "should hold sealed personal data but holds none"
                )
            return domain_event
        if erased:
            attributes.update(dict.fromkeys(names, ERASED))
        else:
            attributes.update(self._open(stored_event, sealed, names))
        return domain_event

    def _open(
        self, stored: StoredEvent, sealed: dict[str, Any], names: tuple[str, ...]
    ) -> dict[str, Any]:
        where = f"event {stored.originator_id} v{stored.originator_version}"
        customer_id = stored.originator_id
        assert isinstance(customer_id, UUID)
        key = self.keys.get(customer_id)
        if key is None:
            return dict.fromkeys(names, ERASED)
        if key.key_id != sealed.get("key_id"):
            raise SealError(f"{where} was sealed with another key")
        version_2 = sealed.get("v") == 2
        aad = (
            part_envelope(customer_id, stored.originator_version, stored.topic, BASE_PART)
            if version_2
            else envelope(customer_id, stored.originator_version, stored.topic)
        )
        opened: dict[str, Any] = self._decrypt(key.key, sealed, aad, where)
        if set(opened) != set(names):
            raise SealError(f"{where}: sealed attributes do not match the event type")
        if version_2:
            self._open_parts(stored, key, sealed, opened, where)
        return opened

    def _decrypt(self, key: bytes, sealed: dict[str, Any], aad: bytes, where: str) -> Any:
        try:
            blob = base64.b64decode(sealed["data"], validate=True)
            plaintext = open_sealed(key, blob, aad)
        except (SealOpenError, ValueError, KeyError, TypeError) as exc:
            raise SealError(
                f"{where}: personal data does not belong to this event or was altered"
            ) from exc
        return self.transcoder.decode(plaintext)

    def _open_parts(
        self,
        stored: StoredEvent,
        key: DataKey,
        sealed: dict[str, Any],
        opened: dict[str, Any],
        where: str,
    ) -> None:
        """Fill each attribute's fields from the category parts; a destroyed category
        (the log's answer) gives `ERASED` for its fields, its key is never looked up."""
        customer_id = stored.originator_id
        assert isinstance(customer_id, UUID)
        parts = sealed.get("parts")
        if not isinstance(parts, dict):
            raise SealError(f"{where}: the sealed parts are malformed")
        erasures = self.keys.erasures
        gone = erasures.erased_categories(customer_id)
        # The event's part of the associated data, computed once for all parts.
        prefix = part_envelope(customer_id, stored.originator_version, stored.topic, "")
        for category, part in parts.items():
            if not isinstance(part, dict):
                raise SealError(f"{where}: the sealed parts are malformed")
            destroyed = category in gone
            category_key = None if destroyed else key.categories.get(category)
            if category_key is None and not destroyed:
                # A destruction committed by another process since this key was cached.
                erasures.refresh()
                gone = erasures.erased_categories(customer_id)
                destroyed = category in gone
                if not destroyed:
                    raise SealError(
                        f"{where}: the key of category {category} is missing, but the log "
                        "records no destruction of it"
                    )
            if destroyed or category_key is None:
                for name in part.get("attrs", ()):
                    target = opened.get(name)
                    if isinstance(target, dict):
                        for field_name in fields_of_key_category(category):
                            target[field_name] = ERASED
                continue
            if category_key.key_id != part.get("key_id"):
                raise SealError(f"{where} was sealed with another key")
            group = self._decrypt(category_key.key, part, prefix + category.encode(), where)
            if not isinstance(group, dict) or set(group) != set(part.get("attrs", ())):
                raise SealError(f"{where}: sealed attributes do not match the event type")
            for name, values in group.items():
                target = opened.get(name)
                if not isinstance(target, dict) or not isinstance(values, dict):
                    raise SealError(f"{where}: sealed attributes do not match the event type")
                target.update(values)
