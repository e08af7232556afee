"""Backup targets as operators write them in LEDGER_BACKUP_REPOS, and the pgBackRest config
generated from them: every repository encrypted, off-site buckets configured like local
folders, credentials never shown in messages."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from ledger.config import ConfigError, Settings
from ledger.operations.pgbackrest import Cluster, _blocking_parent, render_config
from ledger.operations.targets import parse_targets


def test_local_and_offsite_repositories_are_both_encrypted(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "LEDGER_STORE": "postgresql://postgres@127.0.0.1:5432/crm",
            "LEDGER_DATA_DIR": str(tmp_path),
            "LEDGER_BACKUP_REPOS": f"{tmp_path / 'local'},"
            "s3://ledger-backups/prod?region=eu-west-1&endpoint=s3.eu-west-1.amazonaws.com"
            "&key-type=auto",
            "LEDGER_BACKUP_RETENTION_FULL": "4",
        }
    )
    targets = parse_targets(settings.resolved_backup_repos)
    assert targets[1].label == "s3://ledger-backups/prod"  # no query: it may hold a key
    cluster = Cluster(tmp_path / "pg", "/run/postgresql", 5432, "postgres")
    text = render_config(settings, cluster, targets, "secret-pass")
    lines = set(text.splitlines())
    for n in (1, 2):
        assert {f"repo{n}-cipher-type=aes-256-cbc", f"repo{n}-cipher-pass=secret-pass",
                f"repo{n}-retention-full=4"} <= lines  # fmt: skip
    assert {"repo2-type=s3", "repo2-s3-bucket=ledger-backups", "repo2-path=/prod",
            "repo2-s3-region=eu-west-1", "repo2-s3-key-type=auto"} <= lines  # fmt: skip
    assert "[ledger-crm]" in lines and f"pg1-path={tmp_path / 'pg'}" in lines


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a,b,c,d,e", "at most 4"),
        ("/x,/x", "listed twice"),
        ("ftp://host/x", "expected a path"),
    ],
)
def test_bad_targets_are_named(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_targets(Settings.from_env({"LEDGER_BACKUP_REPOS": value}).resolved_backup_repos)
    assert "LEDGER_BACKUP_REPOS" in str(caught.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another account to test against")
def test_a_folder_the_server_account_cannot_enter_is_found() -> None:
    postgres = pwd.getpwnam("postgres")
    top = Path(tempfile.mkdtemp())  # /tmp/xyz, 0700 root
    try:
        closed = top / "closed"
        closed.mkdir(mode=0o700)
        config = closed / "pgbackrest.conf"
        assert _blocking_parent(config, postgres) == top
        top.chmod(0o711)
        assert _blocking_parent(config, postgres) == closed
        closed.chmod(0o711)
        assert _blocking_parent(config, postgres) is None
    finally:
        shutil.rmtree(top)
