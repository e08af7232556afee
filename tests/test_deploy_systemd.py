"""The shipped systemd units as an operator installs them: `systemd-analyze verify` finds
no error or warning in any of them (unknown keys, bad values, a missing binary), and the
example environment file is a valid configuration whose shutdown grace fits inside the
units' stop timeout (else systemd would kill the server mid-way through a graceful stop)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.config import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
INSTALLED_BINARY = "/opt/ledger/bin/ledger"
UNITS = sorted(p.name for p in DEPLOY.iterdir() if p.suffix in (".service", ".timer"))
SERVER_UNITS = ("ledger.service", "ledger@.service", "ledger-projections.service")


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (install the systemd package)")
        pytest.skip("systemd-analyze is missing")
    return found


def _ledger_binary() -> str:
    """The `ledger` entry point of the environment running the tests, standing in for the
    installed /opt/ledger/bin/ledger (verify checks that ExecStart is executable)."""
    binary = Path(sys.executable).parent / "ledger"
    assert binary.exists(), f"no ledger entry point beside {sys.executable}"
    return str(binary)


def _env_file() -> dict[str, str]:
    """The example ledger.env as systemd reads it: VAR=value lines, # comments."""
    values: dict[str, str] = {}
    for line in (DEPLOY / "ledger.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), line
            values[name] = value
    return values


def _directives(unit: str, name: str) -> list[str]:
    found = re.findall(rf"^{name}=(.*)$", (DEPLOY / unit).read_text(), re.MULTILINE)
    return [str(value).strip() for value in found]


def _directive(unit: str, name: str) -> str:
    found = _directives(unit, name)
    assert len(found) == 1, f"{unit}: expected one {name}="
    return found[0]


def test_every_unit_is_shipped() -> None:
    assert set(UNITS) == {
        "ledger.service",
        "ledger@.service",
        "ledger-projections.service",
        "ledger-backup.service",
        "ledger-backup.timer",
    }


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_is_clean(unit: str, tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    binary = _ledger_binary()
    for name in UNITS:  # all of them, so the timer finds its service
        text = (DEPLOY / name).read_text()
        assert INSTALLED_BINARY in text or name.endswith(".timer"), name
        (tmp_path / name).write_text(text.replace(INSTALLED_BINARY, binary))
    target = tmp_path / unit
    if unit.endswith("@.service"):  # a template is verified as one of its instances
        target = tmp_path / unit.replace("@.", "@50051.")
        shutil.copy(tmp_path / unit, target)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_postgresql_backup_drop_in_verifies(tmp_path: Path) -> None:
    """The drop-in is shipped as .example (systemd ignores it until installed as .conf);
    installed, the unit with it is still clean."""
    analyze = _systemd_analyze()
    binary = _ledger_binary()
    for name in ("ledger-backup.service", "ledger-backup.timer"):
        text = (DEPLOY / name).read_text().replace(INSTALLED_BINARY, binary)
        (tmp_path / name).write_text(text)
    drop_ins = tmp_path / "ledger-backup.service.d"
    drop_ins.mkdir()
    example = DEPLOY / "ledger-backup.service.d" / "postgresql.conf.example"
    shutil.copy(example, drop_ins / "postgresql.conf")
    (drop_ins / "zz-canary.conf").write_text("[Service]\nNotAKey=1\n")
    canary = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "ledger-backup.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "NotAKey" in canary.stderr  # drop-ins are read: the check below can fail
    (drop_ins / "zz-canary.conf").unlink()
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "ledger-backup.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_example_env_is_a_valid_configuration() -> None:
    settings = Settings.from_env(_env_file())
    assert settings.store.kind == "postgresql"
    # A PostgreSQL store's secrets must not default to the service user's home, which
    # ProtectHome=yes hides: the env file names the unit's state directory.
    assert settings.resolved_data_dir == Path("/var/lib/ledger")
    assert settings.projection_mode == "worker"  # ledger-projections.service does the work


@pytest.mark.parametrize("unit", SERVER_UNITS)
def test_stop_timeout_outlasts_the_shutdown_grace(unit: str) -> None:
    grace = Settings.from_env(_env_file()).api.shutdown_grace_seconds
    assert grace >= Settings.from_env({}).api.shutdown_grace_seconds  # not lowered to pass
    assert int(_directive(unit, "TimeoutStopSec")) >= grace + 10
    assert _directive(unit, "KillSignal") == "SIGTERM"
    assert _directives(unit, "EnvironmentFile")[0] == "/etc/ledger/ledger.env"
    assert _directive(unit, "User") == "ledger"
    assert _directive(unit, "ReadWritePaths") == "/var/lib/ledger"
    assert _directive(unit, "UMask") == "0077"
    assert _directive(unit, "CapabilityBoundingSet") == ""


def test_backup_timer_catches_up_missed_runs() -> None:
    assert _directive("ledger-backup.timer", "Persistent") == "true"
    assert _directive("ledger-backup.timer", "Unit") == "ledger-backup.service"
    assert _directive("ledger-backup.service", "ExecStart").endswith("ledger backup")
    assert _directive("ledger-backup.service", "Type") == "oneshot"
