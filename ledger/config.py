"""All settings, read from the environment in one place.

Everything else receives a `Settings` object, so tests and the CLI's `--store` flag can
override any value without touching `os.environ`.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.projections.dedup.batch import DEFAULT_MIN_SCORE

DEFAULT_STORE = "sqlite:///ledger-data/ledger.db"
DEFAULT_LISTEN = "127.0.0.1:50051"
PROJECTION_MODES = ("inline", "worker")
DUPLICATE_POLICIES = ("off", "warn", "refuse")
# PostgreSQL connections of one process (see `Settings.pg_connection_bound`).
DEFAULT_PG_POOL_SIZE = 8
DEFAULT_PG_READERS = 4
# Connections outside the pools: the projection writer, the key store and its VACUUM
# connection, the API store's writer, the server's health probe.
PG_FIXED_CONNECTIONS = 5
LOG_FORMATS = ("json", "text")
# URL parts that the URL's own syntax gives (user@host:port/dbname); a query parameter
# may supply them only when the URL leaves them out (e.g. `?host=/run/postgresql`).
_URL_PARTS = ("host", "port", "user", "password", "dbname")


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
    # libpq parameters from the URL's query (sslmode, application_name, options, ...):
    # every connection the process opens gets them, through `postgres_dsn`.
    params: tuple[tuple[str, str], ...] = ()

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
            query = _query_params(parts.query, setting)
            dbname = unquote(parts.path.lstrip("/")) or query.get("dbname", "")
            if not dbname:
                raise ConfigError(f"{setting}: expected postgresql://user@host:port/dbname")
            try:
                port = parts.port or int(query.get("port") or 5432)
            except ValueError as exc:
                raise ConfigError(f"{setting}: the port is not a number") from exc
            return cls(
                kind="postgresql",
                host=parts.hostname or query.get("host") or "127.0.0.1",
                port=port,
                user=unquote(parts.username or "") or query.get("user") or "postgres",
                password=unquote(parts.password or "") or query.get("password", ""),
                dbname=dbname,
                params=tuple((k, v) for k, v in query.items() if k not in _URL_PARTS),
            )
        raise ConfigError(
            f"{setting}: unsupported scheme {parts.scheme!r}; use sqlite:///path or postgresql://..."
        )

    @property
    def postgres_dsn(self) -> str:
        """The one libpq connection string (key=value form, so no URL quoting pitfalls)
        that every PostgreSQL connection of the process is opened with, so the URL's query
        parameters (sslmode, application_name, ...) reach all of them."""
        fields = dict(self.params)
        fields.update(host=self.host, port=str(self.port), user=self.user, dbname=self.dbname)
        if self.password:
            fields["password"] = self.password
        return make_conninfo("", **fields)

    @property
    def folder_name(self) -> str:
        """A file-name-safe name of this PostgreSQL database: host_port_dbname."""
        raw = f"{self.host}_{self.port}_{self.dbname}"
        return re.sub(r"[^A-Za-z0-9._-]", "_", raw).strip(".") or "ledger"


def _query_params(query: str, setting: str) -> dict[str, str]:
    """The URL's query as libpq parameters; an unknown name is the user's mistake (named;
    values are never echoed: one may be a password)."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        try:
            conninfo_to_dict(make_conninfo("", **{key: value}))
        except psycopg.ProgrammingError:
            raise ConfigError(f"{setting}: unknown connection parameter {key!r}") from None
        params[key] = value
    return params


def with_options(dsn: str, options: str) -> str:
    """`dsn` with `options` (server settings, `-c name=value`) appended to any the user's
    URL gave, instead of replacing them."""
    fields = conninfo_to_dict(dsn)
    given = str(fields.get("options") or "").strip()
    fields["options"] = f"{given} {options}".strip()
    return make_conninfo("", **fields)


@dataclass(frozen=True)
class Settings:
    store_url: str = DEFAULT_STORE
    key_store_url: str | None = None
    data_dir: Path | None = None
    kek_file: Path | None = None
    signing_key_file: Path | None = None
    default_region: str | None = None
    key_cache_seconds: float = 5.0
    # The access-audit anomaly rule (ledger.audit.read_alerts): a principal that reads more
    # than `read_alert_rate` distinct customers within `read_alert_window_seconds` is
    # flagged; 0 turns the rule off.
    read_alert_rate: int = 200
    read_alert_window_seconds: float = 60.0
    actor: str = "cli"
    api: ApiSettings = field(default_factory=lambda: ApiSettings())
    index_key_file: Path | None = None
    review_after_days: int = 365
    projection_mode: str = "inline"
    duplicate_policy: str = "warn"  # registering a likely duplicate: off | warn | refuse
    duplicate_threshold: float = DEFAULT_MIN_SCORE
    # Long-running processes (`ledger serve`) sign a tree head every `tree_head_seconds`
    # and as soon as `tree_head_every` events are unsigned (0 turns either off), and
    # publish every head to `resolved_tree_head_file`, outside the database.
    tree_head_seconds: float = 5.0
    tree_head_every: int = 1000
    tree_head_dir: Path | None = None
    # PostgreSQL connections per process: the event store's pool holds at most
    # `pg_pool_size`; the projection reads, the API store's reads and the audit reads
    # (proofs, tree heads) each at most `pg_readers` (see `pg_connection_bound`).
    pg_pool_size: int = DEFAULT_PG_POOL_SIZE
    pg_readers: int = DEFAULT_PG_READERS
    # Where a PostgreSQL store's local secrets go without LEDGER_DATA_DIR:
    # $XDG_DATA_HOME/ledger/<host>_<port>_<dbname> (XDG_DATA_HOME defaults to
    # ~/.local/share). None: that default.
    data_home: Path | None = None
    # Every erasure's signed certificate is appended to the erasure journal and to each
    # copy, outside the backed-up databases: restoring a backup replays it (see
    # `ledger.crypto_shred.journal`). None: `erasure-journal.jsonl` in the data dir.
    erasure_journal: Path | None = None
    erasure_journal_copies: tuple[Path, ...] = ()
    # Backups (`ledger backup`, ledger.operations): the targets, first the local one, then
    # any off-site ones (paths; for PostgreSQL also s3://, azure://, gs:// URLs), how
    # many full backups each keeps, and where the generated pgBackRest config goes
    # (None: <data dir>/pgbackrest/pgbackrest.conf).
    backup_repos: tuple[str, ...] = ()
    backup_retention_full: int = 2
    pgbackrest_config: Path | None = None
    # `ledger serve` runs retention (`ledger retention apply`) every this many seconds;
    # 0: never (the default: destroying data on a timer is an operator's decision).
    # LEDGER_RETENTION_SCHEDULE: off | daily | a number of seconds.
    retention_schedule_seconds: float = 0.0

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
        review = env.get("LEDGER_REVIEW_AFTER_DAYS", "365")
        if not review.isdigit() or int(review) < 1:
            raise ConfigError("LEDGER_REVIEW_AFTER_DAYS: not a whole number of days (1 or more)")
        mode = env.get("LEDGER_PROJECTIONS") or "inline"
        if mode not in PROJECTION_MODES:
            raise ConfigError(f"LEDGER_PROJECTIONS: expected one of {', '.join(PROJECTION_MODES)}")
        policy = env.get("LEDGER_DUPLICATE_POLICY") or "warn"
        if policy not in DUPLICATE_POLICIES:
            raise ConfigError(
                f"LEDGER_DUPLICATE_POLICY: expected one of {', '.join(DUPLICATE_POLICIES)}"
            )
        threshold = _number(env, "LEDGER_DUPLICATE_THRESHOLD", DEFAULT_MIN_SCORE, minimum=0)
        head_seconds = _number(env, "LEDGER_TREE_HEAD_SECONDS", 5, minimum=0)
        if not head_seconds <= 86_400:  # also refuses nan and inf
            raise ConfigError("LEDGER_TREE_HEAD_SECONDS: seconds between 0 (off) and 86400")
        if not 0.0 <= threshold <= 1.0:  # also refuses nan
            raise ConfigError("LEDGER_DUPLICATE_THRESHOLD: a score between 0 and 1")
        return cls(
            store_url=env.get("LEDGER_STORE") or DEFAULT_STORE,
            key_store_url=env.get("LEDGER_KEY_STORE") or None,
            data_dir=path("LEDGER_DATA_DIR"),
            kek_file=path("LEDGER_KEK_FILE"),
            signing_key_file=path("LEDGER_SIGNING_KEY_FILE"),
            default_region=region.upper() if region else None,
            key_cache_seconds=cache_seconds,
            read_alert_rate=_whole(env, "LEDGER_READ_ALERT_RATE", 200),
            read_alert_window_seconds=_number(env, "LEDGER_READ_ALERT_WINDOW", 60, minimum=0),
            actor=env.get("LEDGER_ACTOR") or f"cli:{getpass.getuser()}",
            api=ApiSettings.from_env(env),
            index_key_file=path("LEDGER_INDEX_KEY_FILE"),
            review_after_days=int(review),
            projection_mode=mode,
            duplicate_policy=policy,
            duplicate_threshold=threshold,
            tree_head_seconds=head_seconds,
            tree_head_every=_whole(env, "LEDGER_TREE_HEAD_EVERY", 1000),
            tree_head_dir=path("LEDGER_TREE_HEAD_DIR"),
            pg_pool_size=_positive(env, "LEDGER_PG_POOL_SIZE", DEFAULT_PG_POOL_SIZE),
            pg_readers=_positive(env, "LEDGER_PG_READERS", DEFAULT_PG_READERS),
            data_home=_data_home(env),
            erasure_journal=path("LEDGER_ERASURE_JOURNAL"),
            erasure_journal_copies=_paths(env, "LEDGER_ERASURE_JOURNAL_COPIES"),
            backup_repos=_repos(env, "LEDGER_BACKUP_REPOS"),
            backup_retention_full=_positive(env, "LEDGER_BACKUP_RETENTION_FULL", 2),
            pgbackrest_config=path("LEDGER_PGBACKREST_CONFIG"),
            retention_schedule_seconds=_schedule(env, "LEDGER_RETENTION_SCHEDULE"),
        )

    def with_store(self, store_url: str) -> Settings:
        return replace(self, store_url=store_url)

    @property
    def store(self) -> StoreLocation:
        return StoreLocation.parse(self.store_url)

    @property
    def resolved_data_dir(self) -> Path:
        """Where local secrets live: LEDGER_DATA_DIR, else beside a SQLite store, else a
        folder of this PostgreSQL database's own under $XDG_DATA_HOME/ledger — never the
        current directory, so a command run from another folder finds the same keys."""
        if self.data_dir is not None:
            return self.data_dir
        store = self.store
        if store.kind == "sqlite" and store.sqlite_path is not None:
            return store.sqlite_path.parent
        home = self.data_home or Path(os.path.expanduser("~")) / ".local" / "share"
        return home / "ledger" / store.folder_name

    @property
    def resolved_backup_repos(self) -> tuple[str, ...]:
        """Where backups go: LEDGER_BACKUP_REPOS, else one local folder beside the secrets
        (add an off-site target: a folder on another disk or host, or a bucket URL)."""
        return self.backup_repos or (str(self.resolved_data_dir / "backups"),)

    @property
    def resolved_pgbackrest_config(self) -> Path:
        return self.pgbackrest_config or self.resolved_data_dir / "pgbackrest" / "pgbackrest.conf"

    @property
    def pg_connection_bound(self) -> int:
        """The most PostgreSQL connections one process opens to the store."""
        return self.pg_pool_size + 3 * self.pg_readers + PG_FIXED_CONNECTIONS

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

    @property
    def resolved_token_key_file(self) -> Path:
        """The API's token-signing key: its own key, so a leaked token key cannot sign
        certificates or tree heads, and rotating it leaves those verifiable."""
        return self.api.token_key_file or self.resolved_data_dir / "token-key.pem"

    @property
    def resolved_tree_head_file(self) -> Path:
        """The append-only JSON-lines file every signed tree head is published to: outside
        the database, so someone who can rewrite the database cannot rewrite what was
        signed; ship it elsewhere (rsync, cp) to keep it out of reach of this host too."""
        return (self.tree_head_dir or self.resolved_data_dir) / "published-tree-heads.jsonl"

    @property
    def resolved_erasure_journal(self) -> Path:
        """The erasure journal: kept out of every database backup, so that a restore
        cannot bring an erased customer back (it is replayed when the ledger opens)."""
        return self.erasure_journal or self.resolved_data_dir / "erasure-journal.jsonl"

    @property
    def erasure_journal_paths(self) -> tuple[Path, ...]:
        """The journal, then its copies (each written before `erase` returns)."""
        primary = self.resolved_erasure_journal
        return (primary, *(p for p in self.erasure_journal_copies if p != primary))

    @property
    def resolved_index_key_file(self) -> Path:
        """The secret that keys the lookup hashes (HMAC) of emails, phones and ids."""
        return self.index_key_file or self.resolved_data_dir / "index-key"

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
            # Our factory: opens its pool with `postgres_dsn` (the URL's query parameters).
            "PERSISTENCE_MODULE": "ledger.audit.recorders:LedgerPostgresFactory",
            "POSTGRES_DBNAME": store.dbname,
            "POSTGRES_HOST": store.host,
            "POSTGRES_PORT": str(store.port),
            "POSTGRES_USER": store.user,
            "POSTGRES_PASSWORD": store.password,
            "POSTGRES_CONNINFO": store.postgres_dsn,
            # The pool keeps up to two connections and opens more, up to pg_pool_size,
            # under load (a CLI command then holds two, not pg_pool_size).
            "POSTGRES_POOL_SIZE": str(min(2, self.pg_pool_size)),
            "POSTGRES_MAX_OVERFLOW": str(self.pg_pool_size - min(2, self.pg_pool_size)),
            "APPLICATION_RECORDER_TOPIC": "ledger.audit.recorders:AuditedPostgresRecorder",
        }


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = (env.get(name) or "false").strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no"):
        raise ConfigError(f"{name}: expected true or false")
    return value in ("1", "true", "yes")


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    text = (env.get(name) or str(default)).strip()
    if not text.isdigit():
        raise ConfigError(f"{name}: not a whole number (0 or more)")
    return int(text)


def _repos(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of backup targets, at most four (pgBackRest's repo1..4)."""
    repos = tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip())
    if len(repos) > 4:
        raise ConfigError(f"{name}: at most 4 backup targets")
    if len(set(repos)) != len(repos):
        raise ConfigError(f"{name}: a target is listed twice")
    return repos


def _data_home(env: Mapping[str, str]) -> Path:
    """$XDG_DATA_HOME, or ~/.local/share when it is unset or relative (the XDG rule: a
    relative one would depend on the current directory again)."""
    value = env.get("XDG_DATA_HOME")
    if value and Path(value).is_absolute():
        return Path(value)
    home = env.get("HOME")
    return (Path(home) if home else Path(os.path.expanduser("~"))) / ".local" / "share"


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _whole(env, name, default)
    if value < 1:
        raise ConfigError(f"{name}: must be at least 1")
    return value


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    try:
        value = float(env.get(name) or default)
    except ValueError as exc:
        raise ConfigError(f"{name}: not a number") from exc
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum:g}")
    return value


@dataclass(frozen=True)
class ApiSettings:
    """The gRPC server's settings (`ledger serve`, `server.py`).

    TLS is on when a certificate and key are given; with a client CA as well, every client
    must present a certificate it signed (mutual TLS). Without TLS the server listens on a
    loopback address only, unless LEDGER_ALLOW_PLAINTEXT says otherwise (e.g. behind a mesh
    that terminates mTLS), so bearer tokens never cross a network in the clear by accident.
    """

    listen: str = DEFAULT_LISTEN
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    allow_plaintext: bool = False
    token_key_file: Path | None = None
    workers: int = 64
    shutdown_grace_seconds: float = 30.0
    # A followed stream holds a worker for as long as it is open, so streams are capped in
    # total below the pool (the rest stays free for unary calls and health checks) and per
    # principal (one client cannot take every stream slot).
    max_streams: int = 32
    max_streams_per_principal: int = 4
    # How stale the revocation list open streams check may be (a revocation or expiry ends
    # them within about this long, plus one follow poll).
    stream_recheck_seconds: float = 0.5
    # Refused authentications from one source are recorded at most once per window; the
    # rest are counted into the next record (ledger.api.refusals).
    auth_refusal_window_seconds: float = 1.0
    # The Prometheus endpoint (HOST:PORT; None: off). Loopback only unless the API's TLS
    # certificate is configured (the endpoint then serves HTTPS with it) or
    # LEDGER_ALLOW_PLAINTEXT says a proxy in front terminates TLS.
    metrics_listen: str | None = None
    # How often the server checks that the event store answers (health and ledger_store_up).
    health_probe_seconds: float = 2.0
    # `ledger serve` logs one JSON object a line (json) or plain lines (text).
    log_format: str = "json"

    @property
    def stream_slots(self) -> int:
        """Streams allowed at once: LEDGER_MAX_STREAMS, but always leaving one worker free."""
        return max(0, min(self.max_streams, self.workers - 1))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiSettings:
        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value) if value else None

        settings = cls(
            listen=env.get("LEDGER_LISTEN") or DEFAULT_LISTEN,
            tls_cert_file=path("LEDGER_TLS_CERT_FILE"),
            tls_key_file=path("LEDGER_TLS_KEY_FILE"),
            tls_client_ca_file=path("LEDGER_TLS_CLIENT_CA_FILE"),
            allow_plaintext=_flag(env, "LEDGER_ALLOW_PLAINTEXT"),
            token_key_file=path("LEDGER_TOKEN_KEY_FILE"),
            workers=int(_number(env, "LEDGER_API_WORKERS", 64, minimum=1)),
            shutdown_grace_seconds=_number(env, "LEDGER_SHUTDOWN_GRACE_SECONDS", 30, minimum=0),
        )
        settings = replace(
            settings,
            max_streams=_whole(env, "LEDGER_MAX_STREAMS", settings.workers // 2),
            max_streams_per_principal=_whole(env, "LEDGER_MAX_STREAMS_PER_PRINCIPAL", 4),
            stream_recheck_seconds=_number(env, "LEDGER_STREAM_RECHECK_SECONDS", 0.5, minimum=0.05),
            auth_refusal_window_seconds=_number(
                env, "LEDGER_AUTH_REFUSAL_WINDOW_SECONDS", 1.0, minimum=0
            ),
            metrics_listen=env.get("LEDGER_METRICS_LISTEN") or None,
            health_probe_seconds=_number(env, "LEDGER_HEALTH_PROBE_SECONDS", 2.0, minimum=0.1),
            log_format=(env.get("LEDGER_LOG_FORMAT") or "json").strip().lower(),
        )
        if settings.log_format not in LOG_FORMATS:
            raise ConfigError(f"LEDGER_LOG_FORMAT: expected one of {', '.join(LOG_FORMATS)}")
        if settings.max_streams >= settings.workers:
            raise ConfigError(
                f"LEDGER_MAX_STREAMS must be below LEDGER_API_WORKERS ({settings.workers}): "
                "a stream holds a worker while open, and unary calls and health checks "
                "need the rest"
            )
        if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
            raise ConfigError("LEDGER_TLS_CERT_FILE and LEDGER_TLS_KEY_FILE go together")
        if settings.tls_client_ca_file is not None and settings.tls_cert_file is None:
            raise ConfigError("LEDGER_TLS_CLIENT_CA_FILE needs LEDGER_TLS_CERT_FILE and _KEY_FILE")
        return settings

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def mutual_tls(self) -> bool:
        return self.tls_client_ca_file is not None


def _paths(env: Mapping[str, str], name: str) -> tuple[Path, ...]:
    """A list of files, separated by the OS path separator (`:`), like PATH."""
    value = env.get(name) or ""
    parts = [part.strip() for part in value.split(os.pathsep)]
    return tuple(Path(part) for part in parts if part)


def _schedule(env: Mapping[str, str], name: str) -> float:
    """off (default) | daily | seconds between runs (at least 60)."""
    value = (env.get(name) or "off").strip().lower()
    if value == "off":
        return 0.0
    if value == "daily":
        return 86_400.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 60 <= seconds <= 31_622_400:  # also refuses nan and inf
        raise ConfigError(f"{name}: expected off, daily, or seconds between 60 and 31622400")
    return seconds
