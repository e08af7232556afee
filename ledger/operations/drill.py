"""`ledger backup verify`: a restore drill. The newest backup is restored into a scratch
location, opened through the ledger (as a real restore is), verified, and compared with
the live store: what a restore would lose (RPO) and how long it took (RTO)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.audit.key_check import check_keys
from ledger.audit.leaf_mac import leaf_key
from ledger.audit.storage import AuditStore
from ledger.audit.verifier import Report, verify
from ledger.config import Settings
from ledger.operations import snapshot
from ledger.operations.counts import Counts, count
from ledger.operations.restore import _after_restore, tree_size
from ledger.operations.targets import Target
from ledger.signing import LedgerSigner

Step = Callable[[str], None]


@dataclass
class DrillResult:
    backup: str
    backup_time: str
    restored: Counts
    live: Counts
    restore_seconds: float
    report: Report
    problems: list[str] = field(default_factory=list)

    @property
    def lost_events(self) -> int:
        return max(0, self.live.last_position - self.restored.last_position)

    @property
    def lost_seconds(self) -> float:
        moment = datetime.fromisoformat(self.backup_time)
        return max(0.0, (datetime.now(UTC) - moment).total_seconds())

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "backup": self.backup,
            "backup_time": self.backup_time,
            "restored": self.restored.to_json(),
            "live": self.live.to_json(),
            "rpo": {"events": self.lost_events, "seconds": round(self.lost_seconds, 1)},
            "rto_seconds": round(self.restore_seconds, 3),
            "verify": self.report.to_json(),
            "published_heads_checked": False,
            "problems": self.problems,
        }


def _check(settings: Settings) -> Report:
    """`ledger verify --no-published-heads` on the restored copy: the live published heads
    run ahead of any backup (a restore statement makes them agree, once recorded)."""
    signer = LedgerSigner.load(
        settings.resolved_signing_key_file, setting="LEDGER_SIGNING_KEY_FILE"
    )
    with AuditStore.open(settings) as store:
        report = verify(store, signer.public_key_pem(), leaf_key=leaf_key(signer))
        report.problems += check_keys(store, settings)
    return report


def _compare(restored: Counts, expected: Counts | None, live: Counts) -> list[str]:
    problems = []
    if expected is not None and restored.customers != expected.customers:
        problems.append(
            f"the backup's manifest lists {expected.customers} customers, the restore "
            f"holds {restored.customers}"
        )
    if expected is not None and restored.events < expected.events:
        problems.append(
            f"the backup's manifest lists {expected.events} events, the restore holds "
            f"{restored.events}"
        )
    if restored.customers > live.customers or restored.last_position > live.last_position:
        problems.append("the restore holds more than the live store (another ledger's backup?)")
    return problems


def _finish(
    scratch: Settings, settings: Settings, name: str, when: str, expected: Counts | None,
    started: float, step: Step,
) -> DrillResult:  # fmt: skip
    step("opening the restored ledger")
    _after_restore(scratch, tree_size(scratch))
    seconds = time.perf_counter() - started
    step("verifying the restored log")
    report = _check(scratch)
    restored, live = count(scratch), count(settings)
    result = DrillResult(name, when, restored, live, seconds, report)
    result.problems = _compare(restored, expected, live)
    return result


def drill_sqlite(settings: Settings, target: Target, step: Step) -> DrillResult:
    chosen = snapshot.choose(target.local_path)
    with tempfile.TemporaryDirectory(prefix="ledger-drill-") as folder:
        started = time.perf_counter()
        step(f"restoring {chosen.name}")
        scratch = snapshot.scratch_settings(settings, Path(folder))
        snapshot.copy_out(chosen, Path(folder) / snapshot.EVENTS_FILE,
                          Path(folder) / snapshot.KEYS_FILE)  # fmt: skip
        return _finish(
            scratch, settings, chosen.name, chosen.manifest["created_at"], chosen.counts,
            started, step,
        )  # fmt: skip


@contextmanager
def _scratch_dir(owner: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ledger-drill-"))
    try:
        if os.geteuid() == 0 and owner != "root":
            entry = pwd.getpwnam(owner)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _archived_until(settings: Settings, latest: dict[str, Any]) -> str:
    """What a restore replays up to: the live server's last archived WAL segment (the
    backup's end when nothing was archived since)."""
    import psycopg

    with psycopg.connect(settings.store.postgres_dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT last_archived_time FROM pg_stat_archiver").fetchone()
    finished = str(latest["finished_at"])
    if row is None or row[0] is None:
        return finished
    archived: datetime = row[0]
    return max(finished, archived.astimezone(UTC).isoformat())


def drill_postgres(settings: Settings, repo: int, step: Step) -> DrillResult:
    from ledger.operations import pgbackrest

    backrest = pgbackrest.PgBackRest(settings)
    cluster = backrest.cluster()
    backups = [b for b in backrest.info() if b["repo"] in (None, repo)]
    if not backups:
        raise snapshot.BackupError(f"backup verify: no backup in repo{repo}")
    latest = backups[-1]
    store = settings.store
    with _scratch_dir(cluster.owner) as folder:
        data = folder / "data"
        data.mkdir(mode=0o700)
        if os.geteuid() == 0 and cluster.owner != "root":
            entry = pwd.getpwnam(cluster.owner)
            os.chown(data, entry.pw_uid, entry.pw_gid)
        started = time.perf_counter()
        step(f"restoring {latest['label']} into a scratch cluster")
        backrest.restore(repo, into=data, databases=(store.dbname,))
        conf = data / "postgresql.conf"
        if not conf.exists():  # Debian keeps it in /etc/postgresql
            conf.write_text("", encoding="utf-8")
        hba = folder / "hba.conf"
        hba.write_text(f"local all {store.user} trust\nhost all {store.user} 127.0.0.1/32 trust\n",
                       encoding="utf-8")  # fmt: skip
        if os.geteuid() == 0 and cluster.owner != "root":
            entry = pwd.getpwnam(cluster.owner)
            for path in (conf, hba):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        port = pgbackrest.free_port()
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} "
            f"-c hba_file={hba} -c archive_mode=off -c ssl=off -c shared_buffers=16MB"
        )
        step("starting the scratch cluster and replaying WAL")
        pgbackrest.pg_ctl(data, cluster.owner, "-w", "-t", "300", "-o", options,
                          "-l", str(folder / "server.log"), "start")  # fmt: skip
        try:
            url = f"postgresql://{store.user}@127.0.0.1:{port}/{store.dbname}"
            scratch = replace(
                settings,
                store_url=url,
                key_store_url=None if settings.key_store_url in (None, settings.store_url)
                else settings.key_store_url,
                data_dir=settings.resolved_data_dir,
                tree_head_dir=folder,
            )  # fmt: skip
            pgbackrest.wait_promoted(scratch.store.postgres_dsn)
            return _finish(scratch, settings, latest["label"], _archived_until(settings, latest),
                           None,
                           started, step)  # fmt: skip
        finally:
            pgbackrest.pg_ctl(data, cluster.owner, "-m", "immediate", "stop")
