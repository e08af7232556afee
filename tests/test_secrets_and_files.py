"""Where a ledger's secrets live, when they are created, and the files and connections a
process opens: secrets found from any folder, created only with a new ledger, a missing or
foreign one refused with its file named; a mistyped store not turned into a new ledger;
owner-only SQLite files; the store URL's parameters on every PostgreSQL connection, and a
bounded number of them."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from ledger.audit.storage import AuditStore
from ledger.bootstrap import KekMismatchError, SigningKeyMismatchError, open_ledger
from ledger.cli.main import main
from ledger.client import LedgerClient
from ledger.config import ConfigError, Settings
from ledger.crypto_shred.kek import LocalKeyFileProvider
from ledger.signing import LedgerSigner
from ledger.store_state import MissingSecretError
from tests.api_support import customer, start_api
from tests.helpers import PostgresStore, StoreHandle, person

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
SECRET_NAMES = ("kek.json", "signing-key.pem", "index-key", "token-key.pem")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The CLI as a user runs it: no LEDGER_* settings but the ones a test sets; the XDG
    data folder inside the test's own folder."""
    for name in list(os.environ):
        if name.startswith("LEDGER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGER_ACTOR", "secrets-test")
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    return xdg


def _register(store: StoreHandle) -> str:
    with store.open() as ledger:
        return str(ledger.register(person(), actor="test"))


def _secret_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*") if p.name in SECRET_NAMES)


# Finding: PostgreSQL secrets defaulted to ./ledger-data in the current directory ------------


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_postgres_secrets_are_found_from_any_folder(
    store: StoreHandle,
    cli_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert isinstance(store, PostgresStore)
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    monkeypatch.chdir(first)
    assert main(["register", "--given-name", "Ada", "--family-name", "Lovelace", "--json"]) == 0
    customer_id = capsys.readouterr().out.split('"id": "')[1].split('"')[0]
    monkeypatch.chdir(second)
    assert main(["show", customer_id, "--json"]) == 0
    assert '"given_name": "Ada"' in capsys.readouterr().out
    assert main(["verify"]) == 0

    location = store.settings.store
    folder = cli_env / "ledger" / f"{location.host}_{location.port}_{location.dbname}"
    assert _secret_files(folder) == sorted(SECRET_NAMES)
    assert not list(first.iterdir()) and not list(second.iterdir())  # nothing in either cwd
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


# Finding: missing secrets of a ledger that holds data were silently created -----------------


def test_a_ledger_with_data_refuses_missing_secrets_and_creates_none(
    store: StoreHandle,
    cli_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    customer_id = _register(store)
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(MissingSecretError) as refused:
        open_ledger(replace(store.settings, data_dir=elsewhere))
    message = str(refused.value)
    for name, setting in (("kek.json", "LEDGER_KEK_FILE"), ("index-key", "LEDGER_INDEX_KEY_FILE")):
        assert str(elsewhere / name) in message
        assert setting in message
    assert not elsewhere.exists()

    # The same through the CLI: one line, exit 2, no traceback, nothing created.
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(elsewhere))
    for command in (["show", customer_id], ["register", "--family-name", "New"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "signing-key.pem" in err and "LEDGER_SIGNING_KEY_FILE" in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not elsewhere.exists()


def test_a_foreign_kek_file_is_refused_when_the_ledger_opens(
    store: StoreHandle, tmp_path: Path
) -> None:
    _register(store)
    kek_file = store.settings.resolved_kek_file
    LocalKeyFileProvider(tmp_path / "other-kek.json")  # another ledger's key ring
    shutil.copyfile(tmp_path / "other-kek.json", kek_file)
    with pytest.raises(KekMismatchError) as refused:
        open_ledger(store.settings)
    assert str(kek_file) in str(refused.value)
    assert "LEDGER_KEK_FILE" in str(refused.value)


def test_a_foreign_signing_key_is_refused_when_the_ledger_opens(
    store: StoreHandle, tmp_path: Path
) -> None:
    _register(store)  # the command's close signs a tree head
    key_file = store.settings.resolved_signing_key_file
    LedgerSigner.load_or_create(tmp_path / "other.pem")
    shutil.copyfile(tmp_path / "other.pem", key_file)
    with pytest.raises(SigningKeyMismatchError) as refused:
        open_ledger(store.settings)
    assert str(key_file) in str(refused.value)
    assert "LEDGER_SIGNING_KEY_FILE" in str(refused.value)


def test_a_new_ledger_gets_all_its_secrets_owner_only(store: StoreHandle) -> None:
    with store.open():
        pass
    folder = store.settings.resolved_data_dir
    assert _secret_files(folder) == sorted(SECRET_NAMES)
    for name in SECRET_NAMES:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600


# Finding: a mistyped store path created a new ledger ------------------------------------------


READING_COMMANDS = [
    ["show", UNKNOWN_ID],
    ["history", UNKNOWN_ID],
    ["list"],
    ["lookup", "--email", "x@example.org"],
    ["quality"],
    ["access-log"],
    ["rotate-kek"],
    ["public-key"],
    ["verify"],
    ["token", "revoke", "someone"],
]


@pytest.mark.parametrize("command", READING_COMMANDS, ids=lambda c: c[0] + "-" + c[-1])
def test_commands_that_read_refuse_a_store_with_no_ledger(
    store: StoreHandle,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert "no ledger at" in err or "no key at" in err or "no signing key" in err
    # Nothing was created: no file, no folder, no table.
    assert not store.workdir.exists()
    if isinstance(store, PostgresStore):
        assert store.execute("SELECT to_regclass('ledger_events')") == [(None,)]


def test_a_mistyped_sqlite_path_names_the_store(
    cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "ledgr" / "ledger.db"
    assert main(["show", UNKNOWN_ID, "--store", f"sqlite:///{typo}"]) == 2
    err = capsys.readouterr().err
    assert f"no ledger at {typo} (LEDGER_STORE" in err
    assert not typo.parent.exists()


# Finding: `ledger token issue` created a token key the server did not know -----------------


def test_token_issue_never_creates_a_key_and_agrees_with_the_server(
    store: StoreHandle,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    issue = ["token", "issue", "--principal", "svc", "--role", "service"]
    assert main(issue) == 2
    err = capsys.readouterr().err
    assert str(store.settings.resolved_token_key_file) in err
    assert "LEDGER_TOKEN_KEY_FILE" in err
    assert not store.settings.resolved_token_key_file.exists()

    api = start_api(store)  # opens (creates) the ledger: its token key comes with it
    try:
        assert main(issue) == 0
        token = capsys.readouterr().out.strip()
        with LedgerClient(api.target, token=token) as client:
            assert client.create_customer(customer()).given_name == "Ada"
    finally:
        api.close()


# Finding: SQLite -wal and -shm files were 0644 next to a 0600 database ----------------------


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


def test_sqlite_files_are_owner_only_from_the_start(tmp_path: Path, loose_umask: None) -> None:
    folder = tmp_path / "data"
    settings = Settings(store_url=f"sqlite:///{folder / 'ledger.db'}", data_dir=folder)
    with open_ledger(settings) as ledger:
        for n in range(3):
            ledger.register(person(emails=[f"p{n}@example.org"]), actor="test")
        modes = _modes(folder)  # while open: the -wal and -shm files exist
    assert {"ledger.db", "ledger.db-wal", "ledger.db-shm", "keys.db"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_the_key_stores_journal_is_owner_only(tmp_path: Path, loose_umask: None) -> None:
    """keys.db runs with a rollback journal: SQLite creates keys.db-journal for each write
    transaction, with the database file's mode."""
    folder = tmp_path / "data"
    settings = Settings(store_url=f"sqlite:///{folder / 'ledger.db'}", data_dir=folder)
    with open_ledger(settings) as ledger:
        ledger.register(person(), actor="test")
    conn = sqlite3.connect(folder / "keys.db", isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO ledger_key_watermarks (name, value) VALUES ('probe', 1)")
        journal = folder / "keys.db-journal"
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_readable_sqlite_side_files_left_by_an_older_version_are_tightened(
    tmp_path: Path, loose_umask: None
) -> None:
    folder = tmp_path / "data"
    settings = Settings(store_url=f"sqlite:///{folder / 'ledger.db'}", data_dir=folder)
    with open_ledger(settings) as ledger:
        ledger.register(person(), actor="test")
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "keys.db"):
        path = folder / name
        path.touch()
        os.chmod(path, 0o644)
    with open_ledger(settings):
        modes = _modes(folder)
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}


# Findings: URL parameters reached only the key store; one server held 27 connections --------


def _backends(dsn: str, dbname: str) -> list[tuple[str, str]]:
    """(application_name, backend_type) of every client backend on `dbname` but the
    observers' (this function's own)."""
    with psycopg.connect(dsn, autocommit=True, application_name="observer") as conn:
        rows = conn.execute(
            "SELECT application_name, backend_type FROM pg_stat_activity"
            " WHERE datname = %s AND application_name <> 'observer'"
            " AND backend_type = 'client backend'",
            (dbname,),
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_every_connection_honours_the_url_and_stays_within_the_bound(
    store: StoreHandle,
) -> None:
    assert isinstance(store, PostgresStore)
    name = f"ledger-test-{secrets.token_hex(4)}"
    settings = replace(
        store.settings,
        store_url=f"{store.settings.store_url}?application_name={name}&connect_timeout=7",
        pg_pool_size=3,
        pg_readers=2,
    )
    bound = settings.pg_connection_bound
    assert bound == 3 + 3 * 2 + 5  # five outside the pools: see PG_FIXED_CONNECTIONS
    handle = replace(store, settings=settings)
    api = start_api(handle, settings)
    dbname = settings.store.dbname
    peak: list[int] = [0]
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            backends = _backends(store.dsn, dbname)
            peak[0] = max(peak[0], len(backends))
            seen.update(app for app, _ in backends)
            done.wait(0.02)

    def load(n: int) -> None:
        client = api.client(f"svc-{n % 4}", "admin")
        created = client.create_customer(customer(emails=[f"p{n}@example.org"]))
        client.get_customer(created.name)
        list(client.list_customers(page_size=5))
        if n % 3 == 0:
            client.find_duplicates(customer())
        client.get_tree_head()
        client.get_inclusion_proof(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(24) as pool:
            list(pool.map(load, range(96)))
        final = _backends(store.dsn, dbname)
    finally:
        done.set()
        watcher.join()
        api.close()
    assert peak[0] >= 6, "the load should have opened several connections"
    assert peak[0] <= bound
    assert seen == {name}, "every backend of the process carries the URL's application_name"
    assert {app for app, _ in final} == {name}


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_url_options_reach_the_projections_and_the_event_store(store: StoreHandle) -> None:
    """A server setting given in the URL (`options`) is kept where the ledger adds its own
    (the projections' plan_cache_mode), and reaches the event store's pool."""
    assert isinstance(store, PostgresStore)
    url = f"{store.settings.store_url}?options=-c%20statement_timeout%3D54321"
    handle = replace(store, settings=replace(store.settings, store_url=url))
    with handle.open() as ledger:
        assert ledger.projections is not None
        with ledger.projections.db.reading() as tx:
            assert tx.one("SHOW statement_timeout") == ("54321ms",)
            assert tx.one("SHOW plan_cache_mode") == ("force_custom_plan",)
        datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
        with datastore.get_connection() as conn:
            row = conn.execute("SHOW statement_timeout").fetchone()
        assert row == {"statement_timeout": "54321ms"}


def test_an_unknown_url_parameter_is_named(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/x?sslmod=require&password=hunter2"
    assert main(["list", "--store", url]) == 2
    err = capsys.readouterr().err
    assert "LEDGER_STORE: unknown connection parameter 'sslmod'" in err
    assert "hunter2" not in err


def test_postgres_secrets_folder_is_per_database_and_never_the_cwd() -> None:
    url = "postgresql://me@db.example:6543/crm?sslmode=require"
    env = {"LEDGER_STORE": url, "HOME": "/home/op"}
    folder = Path("/home/op/.local/share/ledger/db.example_6543_crm")
    assert Settings.from_env(env).resolved_data_dir == folder
    assert Settings.from_env({**env, "XDG_DATA_HOME": "relative"}).resolved_data_dir == folder
    assert Settings.from_env({**env, "XDG_DATA_HOME": "/srv/x"}).resolved_data_dir == Path(
        "/srv/x/ledger/db.example_6543_crm"
    )
    given = Settings.from_env({**env, "LEDGER_DATA_DIR": "/etc/ledger"})
    assert given.resolved_kek_file == Path("/etc/ledger/kek.json")


@pytest.mark.parametrize("name", ["LEDGER_PG_POOL_SIZE", "LEDGER_PG_READERS"])
def test_connection_settings_must_be_positive(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "0"})


def test_init_creates_the_ledger_other_commands_then_accept(
    store: StoreHandle,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    assert main(["init", "--json"]) == 0
    assert str(store.settings.resolved_kek_file) in capsys.readouterr().out
    assert _secret_files(store.workdir) == sorted(SECRET_NAMES)
    assert main(["show", UNKNOWN_ID]) == 1  # a ledger now: the customer is what is missing
    assert "not found" in capsys.readouterr().err
    assert main(["init"]) == 0  # again: nothing new, the same files
    assert _secret_files(store.workdir) == sorted(SECRET_NAMES)


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_a_parked_audit_connection_whose_backend_ended_is_replaced(store: StoreHandle) -> None:
    """Audit stores reuse connections; one whose backend ended meanwhile (a server restart,
    a restore) must not fail the next audit call."""
    assert isinstance(store, PostgresStore)
    with store.open() as ledger:
        ledger.register(person(), actor="t")
    settings = store.settings
    dbname = settings.store.dbname
    with AuditStore.open(settings) as audit:
        size = audit.size()
    with psycopg.connect(store.dsn, autocommit=True) as admin:  # the parked one's backend ends
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
    with AuditStore.open(settings) as audit:
        assert audit.size() == size
