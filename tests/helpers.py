"""Test support: a handle on one fresh store of each kind, with direct access to its raw
rows and bytes so tests can tamper with them and search them the way an attacker would."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from ledger.application import CustomerLedger
from ledger.bootstrap import open_ledger
from ledger.config import Settings

EVENTS_TABLE_SQLITE = "stored_events"
EVENTS_TABLE_POSTGRES = "ledger_events"


def person(**overrides: Any) -> dict[str, Any]:
    """A valid registration; tests override what they are about."""
    profile: dict[str, Any] = {
        "given_name": "Testa",
        "family_name": "Person",
        "emails": ["testa.person@example.org"],
        "phones": ["+49 30 1234567"],
        "addresses": [
            {
                "street_number": "1",
                "address_line1": "Hauptstraße",
                "locality": "Berlin",
                "postcode": "10115",
                "country": "DE",
            }
        ],
        "birth_date": "1980-05-17",
        "external_ids": {"CRM": "C-1"},
        "owner": "sales.emea",
    }
    profile.update(overrides)
    return profile


def decode_bytea(dump: bytes) -> bytes:
    """pg_dump writes bytea columns as hex (`\\x6a6f...`): plaintext stored in one would not
    show up in a search of the dump as written, and hex of random bytes is full of long
    digit runs that match numeric needles by chance. Decode them, as an attacker would."""
    return re.sub(rb"\\\\x([0-9a-f]+)", lambda m: bytes.fromhex(m.group(1).decode()), dump)


def _flip(state: bytes) -> bytes:
    """Flip one byte inside the sealed ciphertext, keeping the JSON and base64 valid."""
    text = state.decode()
    marker = '"data":"'
    at = text.index(marker) + len(marker) + 20
    replacement = "A" if text[at] != "A" else "B"
    return (text[:at] + replacement + text[at + 1 :]).encode()


@dataclass
class StoreHandle(ABC):
    settings: Settings
    workdir: Path

    def open(self) -> CustomerLedger:
        return open_ledger(self.settings)

    @abstractmethod
    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def dump_bytes(self) -> bytes:
        """Everything the product wrote, as an attacker with the files/dump would see it."""

    @abstractmethod
    def backup_keys(self) -> Any: ...

    @abstractmethod
    def restore_keys(self, backup: Any) -> None: ...

    events_table = EVENTS_TABLE_SQLITE
    keys_table = "ledger_data_keys"
    ph = "?"

    def _id(self, customer_id: UUID) -> Any:
        return customer_id

    def event_rows(self) -> list[tuple[Any, ...]]:
        return self.execute(
            f"SELECT originator_id, originator_version, topic, state FROM {self.events_table} "
            "ORDER BY originator_id, originator_version"
        )

    def state_of(self, customer_id: UUID, version: int) -> bytes:
        rows = self.execute(
            f"SELECT state FROM {self.events_table} WHERE originator_id={self.ph} "
            f"AND originator_version={self.ph}",
            (self._id(customer_id), version),
        )
        return bytes(rows[0][0])

    def set_state(self, customer_id: UUID, version: int, state: bytes) -> None:
        self.execute(
            f"UPDATE {self.events_table} SET state={self.ph} WHERE originator_id={self.ph} "
            f"AND originator_version={self.ph}",
            (state, self._id(customer_id), version),
        )

    def copy_state(self, src: tuple[UUID, int], dst: tuple[UUID, int]) -> None:
        self.set_state(dst[0], dst[1], self.state_of(*src))

    def flip_sealed_byte(self, customer_id: UUID, version: int) -> None:
        self.set_state(customer_id, version, _flip(self.state_of(customer_id, version)))

    def key_count(self) -> int:
        return int(self.execute(f"SELECT COUNT(*) FROM {self.keys_table}")[0][0])


@dataclass
class SQLiteStore(StoreHandle):
    def _db(self) -> Path:
        path = self.settings.store.sqlite_path
        assert path is not None
        return path

    def _id(self, customer_id: UUID) -> Any:
        return customer_id.hex

    def _connect(self, table: str) -> sqlite3.Connection:
        db = self.workdir / "keys.db" if table == self.keys_table else self._db()
        return sqlite3.connect(db)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        table = self.keys_table if self.keys_table in sql else self.events_table
        with self._connect(table) as conn:
            rows = conn.execute(sql, params).fetchall()
        conn.close()
        return rows

    def dump_bytes(self) -> bytes:
        """Every file in the data directory: databases, WAL and journals, key files."""
        return b"".join(p.read_bytes() for p in sorted(self.workdir.rglob("*")) if p.is_file())

    def backup_keys(self) -> Any:
        backup = self.workdir.parent / f"{self.workdir.name}-keys-backup.db"
        shutil.copyfile(self.workdir / "keys.db", backup)
        return backup

    def restore_keys(self, backup: Any) -> None:
        shutil.copyfile(backup, self.workdir / "keys.db")


@dataclass
class PostgresStore(StoreHandle):
    dsn: str = ""
    events_table = EVENTS_TABLE_POSTGRES
    ph = "%s"

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(sql.encode(), params)
            return cursor.fetchall() if cursor.description else []

    def dump_bytes(self) -> bytes:
        location = self.settings.store
        dump = subprocess.run(
            [
                "pg_dump",
                "-h",
                location.host,
                "-p",
                str(location.port),
                "-U",
                location.user,
                "--no-owner",
                location.dbname,
            ],
            check=True,
            capture_output=True,
        ).stdout
        local = b"".join(p.read_bytes() for p in sorted(self.workdir.rglob("*")) if p.is_file())
        return decode_bytea(dump) + local

    key_tables = ("ledger_data_keys", "ledger_key_watermarks")

    def backup_keys(self) -> Any:
        return {table: self.execute(f"SELECT * FROM {table}") for table in self.key_tables}

    def restore_keys(self, backup: Any) -> None:
        for table, rows in backup.items():
            self.execute(f"DELETE FROM {table}")
            for row in rows:
                marks = ",".join(["%s"] * len(row))
                self.execute(f"INSERT INTO {table} VALUES ({marks})", tuple(row))


def use_store_in_cli(store: StoreHandle, monkeypatch: Any, actor: str) -> None:
    """An in-process `ledger` command sees this store's settings and nothing else of the
    environment's LEDGER_* settings (`monkeypatch`: pytest's, undone after the test)."""
    import os

    for name in [n for n in os.environ if n.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    monkeypatch.setenv("LEDGER_ACTOR", actor)


def run_cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    """In process: (exit code, stderr, stdout); an escaping exception fails the test, and
    so does a traceback printed instead of raised."""
    from ledger.cli.main import main

    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err, captured.out
