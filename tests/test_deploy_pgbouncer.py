"""The shipped pgbouncer configuration in front of PostgreSQL: a ledger whose store URL
names the bouncer (not PostgreSQL) registers, shows, lists and verifies customers. The
run exercises what decided the pool mode: psycopg's prepared statements (a statement run
five times is prepared) and the projection connections' `options` startup parameter."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from ledger.cli.main import main
from tests.conftest import fresh_postgres_database

SHIPPED = Path(__file__).resolve().parent.parent / "deploy" / "pgbouncer"
ALIAS = "ledger_via_bouncer"  # a name PostgreSQL does not have: only the bouncer knows it


def _pgbouncer() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pgbouncer is missing (.ci/run installs it)")
        pytest.skip("pgbouncer is missing (apt-get install pgbouncer)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(folder: Path, port: int, target: str) -> Path:
    """The shipped pgbouncer.ini with only the deployment-specific values replaced: the
    address, the database line, trust auth (the test server trusts), and files in
    `folder`. The pool mode and startup-parameter handling stay as shipped."""
    parts = urlsplit(target)
    ini = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
    ini.optionxform = str  # type: ignore[assignment,method-assign]
    ini.read(SHIPPED / "pgbouncer.ini")
    assert ini["pgbouncer"]["pool_mode"] == "session"
    ini["databases"] = {
        ALIAS: f"host={parts.hostname} port={parts.port or 5432} dbname={parts.path.lstrip('/')}"
    }
    bouncer = ini["pgbouncer"]
    bouncer.update(
        listen_addr="127.0.0.1",
        listen_port=str(port),
        unix_socket_dir="",
        auth_type="trust",
        auth_file=str(folder / "userlist.txt"),
        logfile=str(folder / "pgbouncer.log"),
        pidfile=str(folder / "pgbouncer.pid"),
        admin_users=parts.username or "postgres",
    )
    user = parts.username or "postgres"
    (folder / "userlist.txt").write_text((SHIPPED / "userlist.txt").read_text() + f'"{user}" ""\n')
    path = folder / "pgbouncer.ini"
    with path.open("w") as out:
        ini.write(out)
    return path


@contextmanager
def running_pgbouncer(target: str) -> Iterator[str]:
    """pgbouncer on a free loopback port in front of `target`; yields the URL through it.
    pgbouncer refuses to run as root: as root it runs as the postgres user."""
    binary = _pgbouncer()
    folder = Path(tempfile.mkdtemp(prefix="ledger-pgbouncer-"))
    command = [binary]
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        command = ["runuser", "-u", "postgres", "--", binary]
    port = _free_port()
    config = _config(folder, port, target)
    if os.geteuid() == 0:
        for path in folder.iterdir():
            shutil.chown(path, "postgres", "postgres")
    process = subprocess.Popen([*command, str(config)], stderr=subprocess.PIPE, text=True)
    user = urlsplit(target).username or "postgres"
    url = f"postgresql://{user}@127.0.0.1:{port}/{ALIAS}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "pgbouncer.log").read_text(errors="replace")
                    pytest.fail(f"pgbouncer did not start: {process.stderr}\n{log}")
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _ledger(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code = main([*args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_a_ledger_runs_through_pgbouncer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("LEDGER_ACTOR", "pgbouncer-test")
    with fresh_postgres_database() as target, running_pgbouncer(target) as url:
        monkeypatch.setenv("LEDGER_STORE", url)
        with pytest.raises(psycopg.OperationalError):  # the alias exists only in the bouncer
            psycopg.connect(target.rsplit("/", 1)[0] + f"/{ALIAS}", connect_timeout=5).close()
        ids = [
            _ledger(
                capsys, "register", "--given-name", f"Testa{n}", "--family-name", "Person",
                "--email", f"testa{n}@example.org", "--country", "DE", "--owner", "ops",
            )["id"]
            for n in range(7)  # past psycopg's prepare threshold (5) on the same statements
        ]  # fmt: skip
        shown = _ledger(capsys, "show", ids[3])
        assert shown["given_name"] == "Testa3"
        listed = _ledger(capsys, "list", "--page-size", "50")
        assert sorted(r["id"] for r in listed["customers"]) == sorted(ids)
        report = _ledger(capsys, "verify")
        assert report["ok"] is True, report
        with psycopg.connect(url.rsplit("/", 1)[0] + "/pgbouncer", autocommit=True) as admin:
            stats = {row[0]: row for row in admin.execute("SHOW STATS").fetchall()}
        assert ALIAS in stats  # the ledger's traffic went through the bouncer
