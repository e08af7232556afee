"""The encrypting mapper: personal data is sealed before it reaches any store.

Each event class declares `personal_attributes`; those attributes are serialised together,
encrypted with AES-256-GCM under the customer's own data key, and stored as one `_sealed`
value beside the readable metadata (event type, time, actor, reason, changed field names).
The event's envelope (customer id, version, topic) is the associated data, so a sealed value
copied into another event or another customer's stream fails to open.

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

from ledger.crypto_shred.keyring import KeyRing
from ledger.crypto_shred.sealing import SealOpenError, open_sealed, seal
from ledger.domain.erased import ERASED

SEALED = "_sealed"
AAD_VERSION = b"ledger.sealed.v1"


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
        blob = seal(key.key, self.transcoder.encode(secret), envelope(customer_id, version, topic))
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        state[SEALED] = {
            "key_id": key.key_id,
            "data": base64.b64encode(blob).decode("ascii"),
        }
        return self._store(topic, state)

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
        self, stored: StoredEvent, sealed: dict[str, str], names: tuple[str, ...]
    ) -> dict[str, Any]:
        where = f"event {stored.originator_id} v{stored.originator_version}"
        customer_id = stored.originator_id
        assert isinstance(customer_id, UUID)
        key = self.keys.get(customer_id)
        if key is None:
            return dict.fromkeys(names, ERASED)
        if key.key_id != sealed.get("key_id"):
            raise SealError(f"{where} was sealed with another key")
        try:
            blob = base64.b64decode(sealed["data"], validate=True)
            plaintext = open_sealed(
                key.key, blob, envelope(customer_id, stored.originator_version, stored.topic)
            )
        except (SealOpenError, ValueError, KeyError, TypeError) as exc:
            raise SealError(
                f"{where}: personal data does not belong to this event or was altered"
            ) from exc
        opened: dict[str, Any] = self.transcoder.decode(plaintext)
        if set(opened) != set(names):
            raise SealError(f"{where}: sealed attributes do not match the event type")
        return opened
