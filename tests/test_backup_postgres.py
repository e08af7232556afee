"""PostgreSQL backups through pgBackRest on a private cluster (its own `initdb`, port and
WAL archive, so the machine's shared server is never reconfigured): a full backup to two
encrypted repositories, a point-in-time restore that keeps every write acknowledged before
the target time and none after it, a restore drill, and the list of backups."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.bootstrap import open_ledger
from ledger.cli.main import main
from ledger.config import Settings
from ledger.operations import pgbackrest
from ledger.operations.counts import count
from tests.helpers import person


def _owner() -> str:
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if shutil.which("pgbackrest") is None or not bins:
        if os.environ.get("CI") == "true":
            pytest.fail("pgbackrest or the PostgreSQL server binaries are not installed")
        pytest.skip("pgbackrest or the PostgreSQL server binaries are not installed")
    bindir = bins[-1].parent
    base = Path(tempfile.mkdtemp(prefix="ledger-pgbr-"))
    entry = pwd.getpwnam(_owner())
    os.chown(base, entry.pw_uid, entry.pw_gid)
    data, port = base / "data", pgbackrest.free_port()
    env = {
        "LEDGER_STORE": f"postgresql://postgres@127.0.0.1:{port}/ledger",
        "LEDGER_BACKUP_REPOS": f"{base / 'repo1'},{base / 'repo2'}",
        "LEDGER_PGBACKREST_CONFIG": str(base / "pgbackrest" / "pgbackrest.conf"),
        "LEDGER_DATA_DIR": tempfile.mkdtemp(prefix="ledger-pgbr-secrets-"),
    }
    settings = Settings.from_env(env)
    run = subprocess.run
    run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]),
        check=True, capture_output=True)  # fmt: skip
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
            f"fsync = off\nshared_buffers = 32MB\n{pgbackrest.server_settings(settings)}\n"
        )
    run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"),
                   "start"]), check=True, capture_output=True)  # fmt: skip
    try:
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE ledger")
        yield {"env": env, "settings": settings, "data": data, "bindir": bindir}
    finally:
        run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(env["LEDGER_DATA_DIR"], ignore_errors=True)


def _register(settings: Settings, n: int) -> list[str]:
    with open_ledger(settings) as ledger:
        return [
            str(ledger.register(person(emails=[f"p{i}@example.org"]), actor="t")) for i in range(n)
        ]


def _archive_current_wal(settings: Settings) -> None:
    """Close the WAL segment and wait until the server has archived it."""
    with psycopg.connect(settings.store.postgres_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        for _ in range(300):
            done = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            if done is not None and done[0] is not None and done[0] >= row[0]:
                return
            time.sleep(0.1)
    raise AssertionError("the WAL segment was not archived")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_point_in_time_restore_drill_and_list(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    for name, value in cluster["env"].items():
        monkeypatch.setenv(name, value)
    settings: Settings = cluster["settings"]
    _register(settings, 2)
    setup = _run(capsys, "backup", "setup")
    assert any("archive_command" in line for line in setup["postgresql_conf"])
    config = Path(setup["config"])
    assert (config.stat().st_mode & 0o777) == 0o600
    assert "repo2-cipher-type=aes-256-cbc" in config.read_text()
    assert _run(capsys, "backup")["repos"] == [1, 2]
    for repo in ("repo1", "repo2"):  # encrypted at rest: OpenSSL's salted format
        info = Path(cluster["env"]["LEDGER_BACKUP_REPOS"].split(",")[0]).parent / repo
        assert (info / "backup" / "ledger-ledger" / "backup.info").read_bytes()[:8] == b"Salted__"

    before = _register(settings, 2)  # acknowledged before the target time
    _archive_current_wal(settings)
    time.sleep(1.1)
    target = datetime.now(UTC)
    time.sleep(1.1)
    _register(settings, 1)  # after it: a restore to the target drops it
    # Erased after the target: the restored log has no Erased event for it, the erasure
    # journal (outside the databases) brings the erasure back before anything is served.
    capsys.readouterr()
    erase = ["erase", before[0], "--reason", "subject-request", "--legal-basis", "GDPR Art. 17"]
    assert main(erase) == 0, capsys.readouterr().err
    _archive_current_wal(settings)
    assert count(settings).customers == 5

    drill = _run(capsys, "backup", "verify")
    assert drill["ok"] is True, drill
    assert drill["restored"]["customers"] == 5  # the backup plus the archived WAL
    assert drill["rpo"]["events"] == 0

    listed = _run(capsys, "backup", "list")
    assert {(b["repo"], b["type"]) for b in listed} == {(1, "full"), (2, "full")}

    capsys.readouterr()  # a running cluster is never restored over
    assert main(["restore", "--from", "2", "--force"]) == 3
    assert "stop it first" in capsys.readouterr().err
    pg_ctl = [str(cluster["bindir"] / "pg_ctl"), "-D", str(cluster["data"])]
    subprocess.run(
        _as_owner([*pg_ctl, "-w", "-m", "fast", "stop"]), check=True, capture_output=True
    )
    restored = _run(capsys, "restore", "--from", "2", "--time", target.isoformat(), "--force")
    assert restored["finished"] is True
    after = count(settings)
    assert after.customers == 4
    shown = _run(capsys, "show", before[0])
    assert shown["status"] == "erased" and shown["personal_data"] == "erased", shown
    assert _run(capsys, "show", before[1])["personal_data"] == "available"
    # The restore is a signed statement in the published heads: verify passes by default
    # and names the lost range.
    report = _run(capsys, "verify")
    assert report["ok"] is True and len(report["restores"]) == 1, report
