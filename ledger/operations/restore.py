"""Restoring a backup into the live location, and the one step every restore ends with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger.audit.storage import AuditStore
from ledger.config import Settings
from ledger.operations import snapshot
from ledger.operations.targets import Target
from ledger.store_state import probe


@dataclass(frozen=True)
class Restored:
    source: str
    backup: str
    restored_size: int


def _after_restore(settings: Settings, restored_size: int, reason: str = "ledger restore") -> None:
    """Make a restored ledger current: the single place that runs after every restore.

    First a signed restore statement goes to the publication file (`record_restore`): the
    log now holds `restored_size` events, so the signer and `ledger verify` accept a log
    shorter than the last published head, and report the lost range instead of a
    truncation. Then opening the ledger replays the erasure journal (every erasure
    certified since the backup is applied again: Erased events appended, keys destroyed)
    before anything is served."""
    from ledger.bootstrap import open_ledger
    from ledger.operations.restore_statement import record_restore
    from ledger.signing import LedgerSigner

    signer = LedgerSigner.load(
        settings.resolved_signing_key_file, setting="LEDGER_SIGNING_KEY_FILE"
    )
    record_restore(settings, signer, restored_size, reason)
    with open_ledger(settings, create=False):
        pass


def tree_size(settings: Settings) -> int:
    with AuditStore.open(settings) as store:
        return store.size()


def restore_sqlite(
    settings: Settings, target: Target, *, before: datetime | None, force: bool
) -> Restored:
    """Copy the newest snapshot (taken at or before `before`) over the live files; an
    existing ledger is replaced only with `force`."""
    chosen = snapshot.choose(target.local_path, before)
    events, keys = snapshot.store_files(settings)
    if probe(settings).holds_data and not force:
        raise snapshot.RestoreRefused(
            f"restore: a ledger already exists at {events}; pass --force to replace it "
            "(stop every process using it first)"
        )
    snapshot.copy_out(chosen, events, keys)
    size = tree_size(settings)
    _after_restore(settings, size)
    return Restored(str(target.label), chosen.name, size)


def restore_postgres(
    settings: Settings, repo: int, *, until: datetime | None, force: bool
) -> Restored | None:
    """Restore the live cluster (stopped first) with pgBackRest, up to `until`. A cluster
    whose config lives in its data directory is started again here and the restore
    finished; otherwise (Debian's /etc/postgresql layout) None: start it the usual way,
    then run `ledger restore --finish`."""
    from ledger.operations import pgbackrest

    backrest = pgbackrest.PgBackRest(settings)
    cluster = backrest.cluster()
    if pgbackrest.running(cluster.data_dir):
        raise snapshot.RestoreRefused(
            f"restore: PostgreSQL is running on {cluster.data_dir}; stop it first "
            "(the restore replaces the whole cluster's files)"
        )
    if not force:
        raise snapshot.RestoreRefused(
            f"restore: this replaces the cluster at {cluster.data_dir} (every database in "
            "it); pass --force"
        )
    backrest.restore(repo, until=until)
    if not (cluster.data_dir / "postgresql.conf").exists():
        return None
    pgbackrest.pg_ctl(cluster.data_dir, cluster.owner, "-w", "-t", "300", "-l",
                      str(cluster.data_dir / "restore-start.log"), "start")  # fmt: skip
    return finish(settings, f"repo{repo}")


def finish(settings: Settings, source: str) -> Restored:
    """The second half of a PostgreSQL restore, once the server runs again."""
    from ledger.operations import pgbackrest

    pgbackrest.wait_promoted(settings.store.postgres_dsn)
    size = tree_size(settings)
    _after_restore(settings, size)
    return Restored(source, "the cluster", size)
