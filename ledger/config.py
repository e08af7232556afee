"""All settings, read from the environment in one place.

Everything else receives a `Settings` object, so tests and the CLI's `--store` flag can
override any value without touching `os.environ`.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_STORE = "sqlite:///ledger-data/ledger.db"


class ConfigError(ValueError):
    """A setting is malformed; the message names the variable."""


@dataclass(frozen=True)
class StoreLocation:
    """A parsed `LEDGER_STORE` value: either a SQLite file or a PostgreSQL database."""

    kind: str  # "sqlite" | "postgresql"
    sqlite_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    dbname: str = ""

    @classmethod
    def parse(cls, url: str, *, setting: str = "LEDGER_STORE") -> StoreLocation:
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            # sqlite:///relative/path.db or sqlite:////absolute/path.db (SQLAlchemy's form)
            raw = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
            if not raw:
                raise ConfigError(f"{setting}: expected sqlite:///path/to/file.db")
            return cls(kind="sqlite", sqlite_path=Path(unquote(raw)))
        if parts.scheme in ("postgresql", "postgres"):
            dbname = parts.path.lstrip("/")
            if not dbname:
                raise ConfigError(f"{setting}: expected postgresql://user@host:port/dbname")
            try:
                port = parts.port or 5432
            except ValueError as exc:
                raise ConfigError(f"{setting}: the port is not a number") from exc
            return cls(
                kind="postgresql",
                host=parts.hostname or "127.0.0.1",
                port=port,
                user=unquote(parts.username or "postgres"),
                password=unquote(parts.password or ""),
                dbname=unquote(dbname),
            )
        raise ConfigError(
            f"{setting}: unsupported scheme {parts.scheme!r}; use sqlite:///path or postgresql://..."
        )

    @property
    def postgres_dsn(self) -> str:
        """A libpq connection string (key=value form, so no URL quoting pitfalls)."""
        fields = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "dbname": self.dbname,
        }
        if self.password:
            fields["password"] = self.password
        return " ".join(f"{k}='{v}'" for k, v in fields.items())


@dataclass(frozen=True)
class Settings:
    store_url: str = DEFAULT_STORE
    key_store_url: str | None = None
    data_dir: Path | None = None
    kek_file: Path | None = None
    signing_key_file: Path | None = None
    default_region: str | None = None
    key_cache_seconds: float = 5.0
    actor: str = "cli"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value) if value else None

        cache = env.get("LEDGER_KEY_CACHE_SECONDS", "5")
        try:
            cache_seconds = float(cache)
        except ValueError as exc:
            raise ConfigError("LEDGER_KEY_CACHE_SECONDS: not a number") from exc
        region = env.get("LEDGER_DEFAULT_REGION") or None
        return cls(
            store_url=env.get("LEDGER_STORE") or DEFAULT_STORE,
            key_store_url=env.get("LEDGER_KEY_STORE") or None,
            data_dir=path("LEDGER_DATA_DIR"),
            kek_file=path("LEDGER_KEK_FILE"),
            signing_key_file=path("LEDGER_SIGNING_KEY_FILE"),
            default_region=region.upper() if region else None,
            key_cache_seconds=cache_seconds,
            actor=env.get("LEDGER_ACTOR") or f"cli:{getpass.getuser()}",
        )

    def with_store(self, store_url: str) -> Settings:
        return replace(self, store_url=store_url)

    @property
    def store(self) -> StoreLocation:
        return StoreLocation.parse(self.store_url)

    @property
    def resolved_data_dir(self) -> Path:
        """Where local secrets live: next to a SQLite store, else ./ledger-data."""
        if self.data_dir is not None:
            return self.data_dir
        store = self.store
        if store.kind == "sqlite" and store.sqlite_path is not None:
            return store.sqlite_path.parent
        return Path("ledger-data")

    @property
    def resolved_key_store_url(self) -> str:
        """The key store lives apart from the events: its own SQLite file next to a SQLite
        store (so its backups can follow a shorter retention), or its own tables in the same
        PostgreSQL database unless LEDGER_KEY_STORE names another one."""
        if self.key_store_url:
            return self.key_store_url
        store = self.store
        if store.kind == "sqlite":
            return f"sqlite:///{self.resolved_data_dir / 'keys.db'}"
        return self.store_url

    @property
    def resolved_kek_file(self) -> Path:
        return self.kek_file or self.resolved_data_dir / "kek.json"

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or self.resolved_data_dir / "signing-key.pem"

    def eventsourcing_env(self) -> dict[str, str]:
        """Translate our one store URL into the eventsourcing library's variables."""
        store = self.store
        if store.kind == "sqlite":
            assert store.sqlite_path is not None
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(store.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": "10",
                "APPLICATION_RECORDER_TOPIC": "ledger.audit.recorders:AuditedSQLiteRecorder",
            }
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": store.dbname,
            "POSTGRES_HOST": store.host,
            "POSTGRES_PORT": str(store.port),
            "POSTGRES_USER": store.user,
            "POSTGRES_PASSWORD": store.password,
            "APPLICATION_RECORDER_TOPIC": "ledger.audit.recorders:AuditedPostgresRecorder",
        }
