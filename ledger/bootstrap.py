"""Wiring: turn `Settings` into a ready `CustomerLedger` (the one place that knows which
concrete key store, KEK provider and signer to build)."""

from __future__ import annotations

from ledger.application import CustomerLedger
from ledger.config import ConfigError, Settings, StoreLocation
from ledger.crypto_shred.category_erasure import replay_category_journal, reshred_categories
from ledger.crypto_shred.kek import KeyUnwrapError, LocalKeyFileProvider
from ledger.crypto_shred.keyring import KeyRing
from ledger.crypto_shred.keystore import (
    KeyStore,
    KeyStoreLost,
    PostgresKeyStore,
    SQLiteKeyStore,
    SqlKeyStore,
    open_key_store,
    sqlite_key_store_path,
)
from ledger.crypto_shred.replay import replay_journal
from ledger.projections.wiring import attach_projections
from ledger.signing import LedgerSigner, ensure_private_dir
from ledger.sqlite_files import prepare_private_sqlite
from ledger.store_state import probe, require_ledger, require_secrets, secrets_of


class KekMismatchError(ConfigError):
    """The KEK file is not the one this ledger's data keys were wrapped under."""


class SigningKeyMismatchError(ConfigError):
    """The signing key file is not the key that signed this ledger's tree heads."""


def _same_cluster(a: StoreLocation, b: StoreLocation) -> bool:
    """Same PostgreSQL server (host and port): one WAL, flushed in commit order."""
    return (a.host, a.port) == (b.host, b.port)


def _where(key_store: KeyStore) -> str:
    """Names the key store in an error without its URL (which may hold a password)."""
    if isinstance(key_store, SQLiteKeyStore):
        return str(key_store.path)
    if isinstance(key_store, PostgresKeyStore):
        return f"table {key_store.keys_table}"
    return type(key_store).__name__


def _check_kek(settings: Settings, key_store: KeyStore) -> None:
    """One live data key must open under the KEK file: a different file (another folder's)
    is refused now, with the file named, rather than as unwrap errors on later reads."""
    if not isinstance(key_store, SqlKeyStore):
        return
    try:
        key_store.check_provider()
    except KeyUnwrapError as exc:
        raise KekMismatchError(
            f"the key-encryption keys in {settings.resolved_kek_file} do not open this "
            f"ledger's data keys ({exc}); set LEDGER_KEK_FILE or LEDGER_DATA_DIR to the "
            "ledger's own file"
        ) from None


def open_ledger(settings: Settings | None = None, *, create: bool = True) -> CustomerLedger:
    """Open the ledger the settings describe, then finish any erasure the key store has not
    yet seen before anything can be read.

    With `create`, a store that holds no ledger yet becomes a new one, with new secret
    files; without it (commands that only read or change existing customers) a missing
    store is refused (NoLedgerError). Secret files are created only for a new ledger: for
    one that holds data, a missing secret is refused (MissingSecretError), naming it.
    """
    settings = settings or Settings.from_env()
    state = probe(settings) if create else require_ledger(settings)
    secrets = secrets_of(settings)
    if state.holds_data or not create:
        require_secrets(settings, secrets[:3])  # the token key is the API's (`ledger serve`)
    else:
        ensure_private_dir(settings.resolved_data_dir)
        LedgerSigner.load_or_create(settings.resolved_token_key_file)
    store = settings.store
    if store.kind == "sqlite" and store.sqlite_path is not None:
        prepare_private_sqlite(store.sqlite_path)
    provider = LocalKeyFileProvider(settings.resolved_kek_file)
    key_file = sqlite_key_store_path(settings.resolved_key_store_url)
    new_key_file = key_file is not None and str(key_file) != ":memory:" and not key_file.exists()
    key_store = open_key_store(settings.resolved_key_store_url, provider)
    try:
        if state.holds_data:
            # A key store with no key at all beside a log that holds events was lost
            # (opening it creates it afresh): refused, or every customer would look as if
            # their key were gone.
            if state.holds_events and key_store.is_empty():
                if new_key_file and key_file is not None:
                    # The empty file opening just made would hide the loss from the next run.
                    key_file.unlink(missing_ok=True)
                raise KeyStoreLost(_where(key_store))
            _check_kek(settings, key_store)
    except BaseException:
        key_store.close()
        raise
    if isinstance(key_store, PostgresKeyStore) and store.kind == "postgresql":
        key_store.commits_before_events = _same_cluster(
            StoreLocation.parse(settings.resolved_key_store_url, setting="LEDGER_KEY_STORE"),
            store,
        )
    keys = KeyRing(key_store, ttl=settings.key_cache_seconds)
    try:
        signer = LedgerSigner.load_or_create(settings.resolved_signing_key_file)
        if state.signer_key_id is not None and state.signer_key_id != signer.key_id():
            raise SigningKeyMismatchError(
                f"the signing key {settings.resolved_signing_key_file} (key id "
                f"{signer.key_id()}) is not the key that signed this ledger's tree heads (key "
                f"id {state.signer_key_id}); set LEDGER_SIGNING_KEY_FILE or LEDGER_DATA_DIR "
                "to the ledger's own file"
            )
    except BaseException:
        key_store.close()
        raise
    try:
        ledger = CustomerLedger(settings, keys, signer)
    except Exception:
        key_store.close()
        raise
    ledger.keys_with_events = (
        isinstance(key_store, PostgresKeyStore)
        and store.kind == "postgresql"
        and settings.resolved_key_store_url == settings.store_url
    )
    try:
        attach_projections(ledger)  # before reshred: its purges must reach the projections
        # Erasures a restore of the databases lost come back from the journal (kept
        # outside them), and the journal gets what the log has and it lacks.
        ledger.journal_replay = replay_journal(ledger)
        # The same for destroyed categories (their own journal files), then the key
        # store forgets every category key the log says is destroyed.
        replay_category_journal(ledger)
    except Exception:
        ledger.close()
        raise
    ledger.reshred()
    reshred_categories(ledger)
    return ledger
