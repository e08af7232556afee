"""Shared fixtures.

`postgres_dsn` gives each test run its own freshly created PostgreSQL database (random name,
dropped afterwards), so runs never see each other's tables. Without a reachable server the
PostgreSQL tests are skipped locally but fail in CI (CI=true), where a silent skip would
hide a whole store going untested.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ledger.config import Settings
from tests.helpers import PostgresStore, SQLiteStore, StoreHandle

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _with_dbname(dsn: str, dbname: str) -> str:
    """The same server and user, another database; keeps URL form when given a URL."""
    parts = urlsplit(dsn)
    if parts.scheme in ("postgresql", "postgres"):
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    return make_conninfo(dsn, dbname=dbname)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create a database with a random name on the test server; drop it afterwards."""
    base = os.environ.get("LEDGER_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is unreachable (LEDGER_TEST_POSTGRES_DSN): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"ledger_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(base, name)
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    with fresh_postgres_database() as dsn:
        yield dsn


# --- ledger stores: one fresh store of each kind per test -----------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreHandle]:
    """Every contract test runs once per store adapter."""
    data_dir = tmp_path / "ledger-data"
    if request.param == "sqlite":
        settings = Settings(
            store_url=f"sqlite:///{data_dir / 'ledger.db'}",
            data_dir=data_dir,
            key_cache_seconds=0.5,
        )
        yield SQLiteStore(settings=settings, workdir=data_dir)
        return
    with fresh_postgres_database() as url:
        settings = Settings(store_url=url, data_dir=data_dir, key_cache_seconds=0.5)
        yield PostgresStore(settings=settings, workdir=data_dir, dsn=url)
