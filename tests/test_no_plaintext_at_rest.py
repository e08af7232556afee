"""DESIGN invariant 6: no personal data in plaintext anywhere the product writes.

Registers many customers with distinctive values, then reads every byte an attacker with
the files (SQLite: every file in the data folder, WAL and journals included) or a dump
(PostgreSQL: `pg_dump`) would have, and searches them the ways a brute-force reader would:
as typed, lower-cased, and (for phones) digits only.
"""

from __future__ import annotations

import random
import string
import subprocess
from uuid import UUID

import psycopg
import pytest

from ledger.domain.erased import ERASED
from tests.conftest import fresh_postgres_database
from tests.helpers import StoreHandle, decode_bytea, person

CUSTOMERS = 1000
ERASED_COUNT = 50


def _word(rng: random.Random, length: int) -> str:
    return rng.choice(string.ascii_uppercase) + "".join(
        rng.choice(string.ascii_lowercase) for _ in range(length - 1)
    )


def distinctive_people(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    people = []
    for i in range(count):
        given, family = _word(rng, 9), _word(rng, 11)
        people.append(
            person(
                given_name=given,
                family_name=family,
                emails=[f"{given}.{family}@Mail{i}.example.org"],
                phones=[f"+4915{1_000_000 + i * 37:09d}"],
                external_ids={"CRM": f"K{rng.randrange(10**9, 10**10)}"},
                addresses=[{"address_line1": f"{_word(rng, 10)}weg {i}", "country": "DE"}],
            )
        )
    return people


def needles(profile: dict[str, object]) -> set[bytes]:
    values = [profile["given_name"], profile["family_name"]]
    values += list(profile["emails"])  # type: ignore[call-overload]
    phones = [str(p) for p in profile["phones"]]  # type: ignore[attr-defined]
    values += phones
    values += [a["address_line1"] for a in profile["addresses"]]  # type: ignore[attr-defined]
    values += list(profile["external_ids"].values())  # type: ignore[attr-defined]
    found: set[bytes] = set()
    for value in values:
        text = str(value)
        found.update({text.encode(), text.lower().encode()})
    # Phones are also searched as bare digits (13 of them: long enough not to occur by chance).
    found.update("".join(c for c in phone if c.isdigit()).encode() for phone in phones)
    return found


def leaked(blob: bytes, people: list[dict[str, object]]) -> list[bytes]:
    return [n for p in people for n in needles(p) if n in blob]


@pytest.mark.slow
def test_no_personal_value_in_any_stored_byte(store: StoreHandle) -> None:
    people = distinctive_people(CUSTOMERS, seed=20261125)
    with store.open() as ledger:
        ids: list[UUID] = [ledger.register(p, actor="loader") for p in people]
        # A few changes too, so ProfileChanged events are covered.
        for customer_id, profile in list(zip(ids, people, strict=True))[:20]:
            ledger.change(customer_id, {"emails": [f"new.{profile['emails'][0]}"]}, actor="x")  # type: ignore[index]
            profile["emails"] = [f"new.{profile['emails'][0]}", *profile["emails"]]  # type: ignore[index]
        # While the ledger is open: SQLite's -wal file still holds the recent pages.
        assert leaked(store.dump_bytes(), people) == []

    blob = store.dump_bytes()
    assert len(blob) > CUSTOMERS * 500, "the dump should hold every customer's events"
    assert leaked(blob, people) == []

    erased, kept = ids[:ERASED_COUNT], ids[ERASED_COUNT:]
    with store.open() as ledger:
        for customer_id in erased:
            ledger.erase(customer_id, actor="dpo", legal_basis="GDPR Art. 17")
    blob = store.dump_bytes()
    assert leaked(blob, people) == []

    with store.open() as ledger:
        for customer_id in erased[:10]:
            assert ledger.get(customer_id).personal is ERASED
        for customer_id, profile in zip(kept, people[ERASED_COUNT:], strict=True):
            view = ledger.get(customer_id)
            assert isinstance(view.personal, dict)
            assert view.personal["family_name"] == profile["family_name"]
            assert view.personal["phones"] == profile["phones"]


def test_plaintext_in_a_postgres_bytea_column_would_be_found() -> None:
    """pg_dump hex-encodes bytea; the search decodes it, so plaintext cannot hide there."""
    profile = distinctive_people(1, seed=2)[0]
    email = str(profile["emails"][0])  # type: ignore[index]
    with fresh_postgres_database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (state BYTEA)")
        conn.execute("INSERT INTO t VALUES (%s)", (b'{"email": "' + email.encode() + b'"}',))
        dump = subprocess.run(["pg_dump", dsn], check=True, capture_output=True).stdout
    assert email.encode() not in dump  # as written, the dump hides it...
    assert leaked(decode_bytea(dump), [profile]) != []  # ...decoded, the search finds it


def test_needles_would_be_found_if_stored() -> None:
    """The search above is only meaningful if it finds what it looks for."""
    profile = distinctive_people(1, seed=1)[0]
    phone = str(profile["phones"][0])  # type: ignore[index]
    blob = b"..." + str(profile["family_name"]).lower().encode() + b"..." + phone[1:].encode()
    assert len(leaked(blob, [profile])) == 2
