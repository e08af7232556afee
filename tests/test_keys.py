"""Key management: KEK provider, per-customer key store (one contract, both databases),
the signing identity and erasure certificates."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
import sqlite3
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ledger.crypto_shred import keystore as keystore_module
from ledger.crypto_shred.certificate import (
    CERTIFICATE_TYPE,
    CertificateFormatError,
    ErasureCertificate,
    SignedCertificate,
)
from ledger.crypto_shred.kek import (
    KekProvider,
    KeyFileError,
    KeyUnwrapError,
    LocalKeyFileProvider,
    RotatableKekProvider,
)
from ledger.crypto_shred.keystore import (
    DataKey,
    KeyAlreadyExists,
    KeyStatus,
    PostgresKeyStore,
    SQLiteKeyStore,
    SqlKeyStore,
    open_key_store,
)
from ledger.signing import (
    InsecureKeyFileError,
    LedgerSigner,
    SigningKeyError,
    verify_signature,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leaks(secret: bytes, text: str) -> bool:
    """Whether `text` shows `secret` in any of the usual encodings."""
    forms = [secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]]
    return any(form in text for form in forms)


# KEK provider ------------------------------------------------------------------------------


def test_kek_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "kek.json"
    provider = LocalKeyFileProvider(path)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    document = json.loads(path.read_text())
    assert set(document) == {"active", "keys"}
    assert document["active"] == provider.active_kek_id()
    assert len(base64.b64decode(document["keys"][document["active"]])) == 32
    assert isinstance(provider, KekProvider)
    assert isinstance(provider, RotatableKekProvider)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602])
def test_kek_file_reachable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek.json"
    LocalKeyFileProvider(path)
    path.chmod(mode)
    with pytest.raises(InsecureKeyFileError, match="chmod 600"):
        LocalKeyFileProvider(path)


def test_kek_file_malformed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    for content in ["", "[]", '{"active": "a", "keys": {"a": "c2hvcnQ="}}', '{"active": "b"}']:
        path.write_text(content)
        path.chmod(0o600)
        with pytest.raises(KeyFileError):
            LocalKeyFileProvider(path)


def test_wrap_unwrap_and_every_failure_is_a_clean_unwrap_error(tmp_path: Path) -> None:
    provider = LocalKeyFileProvider(tmp_path / "kek.json")
    dek = secrets.token_bytes(32)
    kek_id, wrapped = provider.wrap(dek, b"customer|key")
    assert dek not in wrapped
    assert provider.unwrap(kek_id, wrapped, b"customer|key") == dek
    flipped = bytes([wrapped[0] ^ 1]) + wrapped[1:]
    kek = json.loads((tmp_path / "kek.json").read_text())["keys"][kek_id]
    for args in [
        (kek_id, wrapped, b"other|key"),
        (kek_id, flipped, b"customer|key"),
        (kek_id, wrapped[:20], b"customer|key"),
        ("no-such-kek", wrapped, b"customer|key"),
    ]:
        with pytest.raises(KeyUnwrapError) as caught:
            provider.unwrap(*args)
        text = f"{caught.value!s} {caught.value!r}"
        assert not leaks(dek, text) and kek not in text


def test_rotate_keeps_old_keks_until_retired(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    provider = LocalKeyFileProvider(path)
    old = provider.active_kek_id()
    old_wrapped = provider.wrap(b"k" * 32, b"ctx")
    new = provider.rotate()
    assert new != old and provider.active_kek_id() == new
    assert provider.wrap(b"k" * 32, b"ctx")[0] == new
    assert provider.unwrap(*old_wrapped, b"ctx") == b"k" * 32
    with pytest.raises(KeyFileError):
        provider.retire(new)  # the active one
    with pytest.raises(KeyFileError):
        provider.retire("unknown")
    provider.retire(old)
    assert provider.kek_ids() == [new]
    with pytest.raises(KeyUnwrapError):
        provider.unwrap(*old_wrapped, b"ctx")
    assert mode_of(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek.json"]  # no temp files left


def test_rotation_by_another_process_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    here, there = LocalKeyFileProvider(path), LocalKeyFileProvider(path)
    there.rotate()
    wrapped = there.wrap(b"k" * 32, b"ctx")
    assert here.unwrap(*wrapped, b"ctx") == b"k" * 32
    assert here.active_kek_id() == there.active_kek_id()


def test_concurrent_first_use_creates_one_keyring(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        ids.append(LocalKeyFileProvider(path).active_kek_id())

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1


# Key store contract ----------------------------------------------------------------------


class KeyStoreContract(ABC):
    """Every key store must pass these; subclasses supply the database."""

    @abstractmethod
    def open_store(self, provider: KekProvider) -> SqlKeyStore:
        """A store on this test's database (the same one each call)."""

    @abstractmethod
    def raw(self, store: SqlKeyStore, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run SQL (`?` placeholders) on a separate connection, as an operator would."""

    @abstractmethod
    def bind(self, customer_id: UUID) -> Any: ...

    @pytest.fixture
    def provider(self, tmp_path: Path) -> LocalKeyFileProvider:
        return LocalKeyFileProvider(tmp_path / "secrets" / "kek.json")

    @pytest.fixture
    def store(self, provider: LocalKeyFileProvider) -> Iterator[SqlKeyStore]:
        opened = self.open_store(provider)
        yield opened
        opened.close()

    def row(self, store: SqlKeyStore, customer_id: UUID) -> tuple[Any, ...]:
        rows = self.raw(
            store,
            f"SELECT key_id, kek_id, wrapped_key FROM {store.keys_table} WHERE customer_id = ?",
            (self.bind(customer_id),),
        )
        assert len(rows) == 1
        return tuple(rows[0])

    def test_create_get_round_trip(self, store: SqlKeyStore) -> None:
        customer = uuid4()
        before = datetime.now(UTC)
        key = store.create(customer)
        assert key.customer_id == customer and len(key.key) == 32 and key.key_id
        assert store.get(customer) == key
        assert not leaks(key.key, repr(key))
        record = store.record(customer)
        assert record.status is KeyStatus.ACTIVE and record.key_id == key.key_id
        assert record.created_at is not None and record.destroyed_at is None
        assert before - timedelta(seconds=5) <= record.created_at <= datetime.now(UTC)
        key_id, _, wrapped = self.row(store, customer)
        assert key_id == key.key_id and key.key not in bytes(wrapped)
        other = store.create(uuid4())
        assert other.key != key.key

    def test_unknown_customer(self, store: SqlKeyStore) -> None:
        customer = uuid4()
        assert store.get(customer) is None
        record = store.record(customer)
        assert record.status is KeyStatus.ABSENT and record.key_id is None
        assert record.created_at is None and record.destroyed_at is None

    def test_create_twice_is_refused(self, store: SqlKeyStore) -> None:
        customer = uuid4()
        key = store.create(customer)
        with pytest.raises(KeyAlreadyExists):
            store.create(customer)
        assert store.get(customer) == key

    def test_destroy(self, store: SqlKeyStore) -> None:
        customer, bystander = uuid4(), uuid4()
        key = store.create(customer)
        kept = store.create(bystander)
        assert store.destroy(customer) == key.key_id
        assert store.get(customer) is None
        record = store.record(customer)
        assert record.status is KeyStatus.DESTROYED and record.key_id == key.key_id
        assert record.created_at is not None and record.destroyed_at is not None
        assert record.destroyed_at >= record.created_at
        assert self.row(store, customer) == (key.key_id, None, None)
        with pytest.raises(KeyAlreadyExists):
            store.create(customer)
        assert store.destroy(customer) == key.key_id  # idempotent
        assert store.record(customer).destroyed_at == record.destroyed_at
        assert store.destroyed_ids() == {customer}
        assert store.get(bystander) == kept

    def test_destroy_of_absent_id_leaves_a_tombstone(self, store: SqlKeyStore) -> None:
        customer = uuid4()
        assert store.destroy(customer) is None
        record = store.record(customer)
        assert record.status is KeyStatus.DESTROYED and record.key_id is None
        assert record.destroyed_at is not None
        with pytest.raises(KeyAlreadyExists):
            store.create(customer)
        assert store.get(customer) is None
        assert customer in store.destroyed_ids()

    def test_wrapped_key_moved_to_another_customer_does_not_open(self, store: SqlKeyStore) -> None:
        victim, thief = uuid4(), uuid4()
        key = store.create(victim)
        store.create(thief)
        key_id, kek_id, wrapped = self.row(store, victim)
        self.raw(
            store,
            f"UPDATE {store.keys_table} SET key_id = ?, kek_id = ?, wrapped_key = ?"
            " WHERE customer_id = ?",
            (key_id, kek_id, bytes(wrapped), self.bind(thief)),
        )
        with pytest.raises(KeyUnwrapError) as caught:
            store.get(thief)
        assert not leaks(key.key, str(caught.value))
        assert store.get(victim) == key

    def test_kek_rotation_rewraps_every_live_key(
        self,
        store: SqlKeyStore,
        provider: LocalKeyFileProvider,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(keystore_module, "_BATCH", 2)  # exercise several batches
        keys = {c: store.create(c) for c in (uuid4() for _ in range(5))}
        erased = next(iter(keys))
        store.destroy(erased)
        old = provider.active_kek_id()
        before = {c: bytes(self.row(store, c)[2]) for c in keys if c != erased}
        new = provider.rotate()
        seen: list[tuple[int, int]] = []
        assert store.rewrap_all(lambda done, total: seen.append((done, total))) == 4
        assert seen[0] == (0, 4) and seen[-1] == (4, 4)
        assert store.kek_ids_in_use() == {new}
        provider.retire(old)
        assert old not in provider.kek_ids()
        for customer, key in keys.items():
            if customer == erased:
                assert store.get(customer) is None
                assert self.row(store, customer) == (key.key_id, None, None)
            else:
                assert store.get(customer) == key
                _, kek_id, wrapped = self.row(store, customer)
                assert kek_id == new and bytes(wrapped) != before[customer]
        assert store.rewrap_all() == 0
        # A restarted process (fresh provider from the file) still reads every key.
        with self.open_store(LocalKeyFileProvider(provider.path)) as reopened:
            survivor = next(c for c in keys if c != erased)
            assert reopened.get(survivor) == keys[survivor]

    def test_watermark_round_trip(self, store: SqlKeyStore) -> None:
        assert store.get_watermark("erasures") == 0
        store.set_watermark("erasures", 42)
        store.set_watermark("other", 2**40)
        assert store.get_watermark("erasures") == 42
        store.set_watermark("erasures", 7)
        assert store.get_watermark("erasures") == 7
        assert store.get_watermark("other") == 2**40
        with pytest.raises(ValueError):
            store.set_watermark("erasures", True)
        with self.open_store(store.provider) as reopened:
            assert reopened.get_watermark("erasures") == 7

    def test_threads_share_one_store(self, store: SqlKeyStore) -> None:
        errors: list[BaseException] = []
        created: list[DataKey] = []

        def work() -> None:
            try:
                for _ in range(15):
                    key = store.create(uuid4())
                    assert store.get(key.customer_id) == key
                    created.append(key)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(created) == 90
        assert all(store.get(k.customer_id) == k for k in created)


class TestSQLiteKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def _location(self, tmp_path: Path) -> None:
        self.path = tmp_path / "keys" / "keys.db"

    def open_store(self, provider: KekProvider) -> SqlKeyStore:
        return SQLiteKeyStore(self.path, provider)

    def raw(self, store: SqlKeyStore, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def bind(self, customer_id: UUID) -> Any:
        return str(customer_id)

    def store_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.path.parent.iterdir() if p.is_file())

    def test_files_are_owner_only_and_use_a_rollback_journal(self, store: SqlKeyStore) -> None:
        assert mode_of(self.path) == 0o600
        assert mode_of(self.path.parent) == 0o700
        assert self.raw(store, "PRAGMA journal_mode") == [("delete",)]
        store.create(uuid4())
        assert [p.name for p in self.path.parent.iterdir()] == ["keys.db"]

    def test_destroyed_key_is_gone_from_the_files(self, store: SqlKeyStore) -> None:
        customers = [uuid4() for _ in range(30)]
        for customer in customers:
            store.create(customer)
        target = customers[12]
        wrapped = bytes(self.row(store, target)[2])
        neighbour = bytes(self.row(store, customers[13])[2])
        assert wrapped in self.store_bytes()  # the check below can see it if it is there
        store.destroy(target)
        assert wrapped not in self.store_bytes()
        assert neighbour in self.store_bytes()
        store.destroy(customers[-1])
        store.destroy(customers[0])
        assert wrapped not in self.store_bytes()

    def test_open_key_store_urls(
        self, tmp_path: Path, provider: LocalKeyFileProvider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        absolute = tmp_path / "abs" / "keys.db"
        with open_key_store(f"sqlite:///{absolute}", provider) as opened:
            assert isinstance(opened, SQLiteKeyStore) and absolute.exists()
        monkeypatch.chdir(tmp_path)
        with open_key_store("sqlite:///rel/keys.db", provider) as opened:
            assert isinstance(opened, SQLiteKeyStore)
        assert (tmp_path / "rel" / "keys.db").exists()
        for bad in ["sqlite://", "mysql://root:secret@host/db"]:
            with pytest.raises(ValueError) as caught:
                open_key_store(bad, provider)
            assert "secret" not in str(caught.value)


class TestPostgresKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def _location(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn
        self.schema = f"keys_{secrets.token_hex(4)}"  # a fresh schema per test

    def open_store(self, provider: KekProvider) -> SqlKeyStore:
        return PostgresKeyStore(self.dsn, provider, schema=self.schema)

    def raw(self, store: SqlKeyStore, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s").encode(), params)
            return cur.fetchall() if cur.description else []

    def bind(self, customer_id: UUID) -> Any:
        return customer_id

    def test_destroy_vacuums_the_keys_table(self, store: SqlKeyStore) -> None:
        customer = uuid4()
        store.create(customer)

        def vacuums() -> int:
            rows = self.raw(
                store,
                "SELECT vacuum_count FROM pg_stat_user_tables"
                " WHERE schemaname = ? AND relname = 'ledger_data_keys'",
                (self.schema,),
            )
            return int(rows[0][0])

        before = vacuums()
        store.destroy(customer)
        assert vacuums() > before

    def test_default_tables_and_bad_names(
        self, postgres_dsn: str, provider: LocalKeyFileProvider
    ) -> None:
        with open_key_store(postgres_dsn, provider) as opened:
            assert isinstance(opened, PostgresKeyStore)
            assert opened.keys_table == '"ledger_data_keys"'
            opened.create(uuid4())
        with pytest.raises(ValueError):
            PostgresKeyStore(postgres_dsn, provider, table_prefix="x; DROP TABLE y")
        with pytest.raises(ValueError):
            PostgresKeyStore(postgres_dsn, provider, schema='a"b')


# Signing identity ------------------------------------------------------------------------


def test_signing_key_is_created_owner_only_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "signing-key.pem"
    signer = LedgerSigner.load_or_create(path)
    assert mode_of(path) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    again = LedgerSigner.load_or_create(path)
    assert again.key_id() == signer.key_id()
    assert again.public_key_pem() == signer.public_key_pem()
    public = serialization.load_pem_public_key(signer.public_key_pem().encode())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signer.key_id() == hashlib.sha256(raw).hexdigest()[:16]
    signature = signer.sign(b"message")
    assert verify_signature(signer.public_key_pem(), b"message", signature)
    assert not verify_signature(signer.public_key_pem(), b"messagf", signature)
    assert not verify_signature(LedgerSigner.generate().public_key_pem(), b"message", signature)


def test_signing_key_readable_by_group_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    LedgerSigner.load_or_create(path)
    path.chmod(0o640)
    with pytest.raises(InsecureKeyFileError):
        LedgerSigner.load_or_create(path)


def test_signing_key_file_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(SigningKeyError) as caught:
        LedgerSigner.load_or_create(path)
    assert "not a key" not in str(caught.value)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(ec_pem)
    with pytest.raises(SigningKeyError):
        LedgerSigner.load_or_create(path)


# Erasure certificates --------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer() -> LedgerSigner:
    return LedgerSigner.generate()


def make_certificate(signer: LedgerSigner, **overrides: Any) -> ErasureCertificate:
    fields: dict[str, Any] = {
        "customer_id": str(uuid4()),
        "erased_at": datetime(2024, 5, 1, 12, 30, tzinfo=UTC).isoformat(),
        "actor": "dpo@example.org",
        "legal_basis": "GDPR Art. 17(1)(b)",
        "reason": "request by the data subject — per e-mail",
        "key_id": "0123456789abcdef",
        "last_version": 7,
        "ledger_key_id": signer.key_id(),
    }
    fields.update(overrides)
    return ErasureCertificate(**fields)


def test_certificate_canonical_form(signer: LedgerSigner) -> None:
    certificate = make_certificate(signer)
    canonical = certificate.canonical_bytes()
    document = json.loads(canonical)
    assert document["type"] == CERTIFICATE_TYPE
    assert list(document) == sorted(document)
    assert canonical == json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert "—".encode() in canonical  # UTF-8, not \u escapes


def test_certificate_verifies_and_round_trips(signer: LedgerSigner) -> None:
    signed = SignedCertificate.issue(make_certificate(signer), signer)
    assert signed.verify(signer.public_key_pem())
    text = signed.to_json()
    assert set(json.loads(text)) == {"certificate", "signature"}
    parsed = SignedCertificate.from_json(text)
    assert parsed == signed and parsed.verify(signer.public_key_pem())
    assert not signed.verify(LedgerSigner.generate().public_key_pem())


def test_any_flipped_byte_of_the_signed_bytes_fails(signer: LedgerSigner) -> None:
    certificate = make_certificate(signer)
    signed = SignedCertificate.issue(certificate, signer)
    canonical = certificate.canonical_bytes()
    signature = base64.b64decode(signed.signature)
    public = signer.public_key_pem()
    assert verify_signature(public, canonical, signature)
    for position in range(len(canonical)):
        for mask in (0x01, 0x80):
            mutated = bytearray(canonical)
            mutated[position] ^= mask
            assert not verify_signature(public, bytes(mutated), signature), position
    for position in range(len(signature)):
        mutated = bytearray(signature)
        mutated[position] ^= 0x01
        forged = dataclasses.replace(signed, signature=base64.b64encode(mutated).decode())
        assert not forged.verify(public), position
    for position in range(len(signed.signature)):  # the text too, padding bits included
        text = signed.signature
        for replacement in "AQg=":
            if text[position] != replacement:
                forged_text = text[:position] + replacement + text[position + 1 :]
                forged = dataclasses.replace(signed, signature=forged_text)
                assert not forged.verify(public), (position, replacement)


def test_any_changed_field_fails(signer: LedgerSigner) -> None:
    certificate = make_certificate(signer)
    signed = SignedCertificate.issue(certificate, signer)
    public = signer.public_key_pem()
    changes: dict[str, Any] = {
        "customer_id": str(uuid4()),
        "erased_at": datetime(2024, 5, 1, 12, 31, tzinfo=UTC).isoformat(),
        "actor": "dpo@example.orh",
        "legal_basis": "GDPR Art. 17(1)(a)",
        "reason": "",
        "key_id": "0123456789abcdee",
        "last_version": 8,
        "ledger_key_id": "0" * 16,
        # A whole-customer certificate passed off as the destruction of one category only.
        "categories": "user.contact.email",
    }
    assert set(changes) == {f.name for f in dataclasses.fields(ErasureCertificate)}
    for name, value in changes.items():
        forged = dataclasses.replace(
            signed, certificate=dataclasses.replace(certificate, **{name: value})
        )
        assert not forged.verify(public), name


def test_any_flipped_character_of_the_json_fails(signer: LedgerSigner) -> None:
    signed = SignedCertificate.issue(make_certificate(signer), signer)
    text = signed.to_json()
    public = signer.public_key_pem()
    for position, char in enumerate(text):
        forged = text[:position] + chr(ord(char) ^ 0x01) + text[position + 1 :]
        try:
            parsed = SignedCertificate.from_json(forged)
        except CertificateFormatError:
            continue
        assert not parsed.verify(public), (position, char)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: "not json",
        lambda d: "[]",
        lambda d: json.dumps({"certificate": d["certificate"]}),
        lambda d: json.dumps({**d, "extra": 1}),
        lambda d: json.dumps({**d, "signature": 5}),
        lambda d: json.dumps({**d, "certificate": "x"}),
        lambda d: json.dumps({**d, "certificate": {**d["certificate"], "type": "other.v1"}}),
        lambda d: json.dumps({**d, "certificate": {**d["certificate"], "extra": "x"}}),
        lambda d: json.dumps(
            {**d, "certificate": {k: v for k, v in d["certificate"].items() if k != "actor"}}
        ),
        lambda d: json.dumps({**d, "certificate": {**d["certificate"], "last_version": "7"}}),
        lambda d: json.dumps({**d, "certificate": {**d["certificate"], "last_version": True}}),
        lambda d: json.dumps({**d, "certificate": {**d["certificate"], "actor": None}}),
        lambda d: json.dumps(
            {**d, "certificate": {**d["certificate"], "erased_at": "2024-05-01T12:30:00"}}
        ),
        lambda d: json.dumps(
            {**d, "certificate": {**d["certificate"], "erased_at": "2024-05-01T14:30:00+02:00"}}
        ),
        lambda d: json.dumps({**d, "certificate": {**d["certificate"], "erased_at": "yesterday"}}),
    ],
)
def test_malformed_certificate_json_is_a_clear_error(
    signer: LedgerSigner, mutate: Callable[[dict[str, Any]], str]
) -> None:
    document = json.loads(SignedCertificate.issue(make_certificate(signer), signer).to_json())
    with pytest.raises(CertificateFormatError):
        SignedCertificate.from_json(mutate(document))


def test_certificate_is_issued_only_by_the_key_it_names(signer: LedgerSigner) -> None:
    with pytest.raises(ValueError):
        SignedCertificate.issue(make_certificate(signer, ledger_key_id="0" * 16), signer)
    signed = SignedCertificate.issue(make_certificate(signer), signer)
    ec_public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(SigningKeyError):
        signed.verify(ec_public)


def test_in_memory_sqlite_store(tmp_path: Path) -> None:
    with SQLiteKeyStore(Path(":memory:"), LocalKeyFileProvider(tmp_path / "kek.json")) as store:
        key = store.create(uuid4())
        assert store.get(key.customer_id) == key
    assert not (tmp_path / ":memory:").exists()
