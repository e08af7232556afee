"""The read-rate rule on its own (times given explicitly, so nothing here depends on the
clock): distinct customers per principal within a sliding window, one alert per window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.audit.read_alerts import MAX_ALERT_CUSTOMERS, AccessAlert, ReadRateMonitor
from ledger.config import ConfigError, Settings

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def raised(alert: AccessAlert | None) -> AccessAlert.Raised:
    assert alert is not None
    (event,) = alert.collect_events()
    assert isinstance(event, AccessAlert.Raised)
    return event


def test_counts_distinct_customers_per_principal_within_the_window() -> None:
    monitor = ReadRateMonitor(rate=3, window_seconds=60)
    for n, customer in enumerate(["a", "b", "c", "a", "b", "c", "a"]):
        assert monitor.observe("alice", [customer], at(n)) is None  # 3 distinct: at the rate
    assert monitor.observe("bob", ["d", "e", "f"], at(8)) is None  # another principal
    event = raised(monitor.observe("alice", ["d"], at(9)))  # the 4th distinct: past it
    assert (event.principal, event.distinct_customers, event.threshold) == ("alice", 4, 3)
    assert event.window_seconds == 60 and sorted(event.customer_ids) == ["a", "b", "c", "d"]
    assert event.first_access == at(4).isoformat()  # b, last read at 4 s, is the oldest kept
    assert event.last_access == at(9).isoformat()


def test_one_alert_per_window_then_again_once_it_passed() -> None:
    monitor = ReadRateMonitor(rate=2, window_seconds=10)
    assert monitor.observe("p", ["a", "b"], at(0)) is None
    assert monitor.observe("p", ["c"], at(1)) is not None
    assert monitor.observe("p", ["d", "e"], at(5)) is None  # same window: quiet
    assert monitor.observe("p", ["f"], at(10.5)) is None  # quiet until 11
    assert monitor.observe("p", ["g"], at(12)) is not None  # still reading widely: again


def test_an_alert_that_could_not_be_stored_is_raised_again() -> None:
    monitor = ReadRateMonitor(rate=1, window_seconds=60)
    assert monitor.observe("p", ["a", "b"], at(0)) is not None
    monitor.rearm("p")  # e.g. the store refused the transaction holding it
    assert monitor.observe("p", ["c"], at(1)) is not None
    assert monitor.observe("p", ["d"], at(2)) is None


def test_reads_leave_the_window() -> None:
    monitor = ReadRateMonitor(rate=2, window_seconds=10)
    assert monitor.observe("p", ["a", "b"], at(0)) is None
    assert monitor.observe("p", ["c"], at(11)) is None  # a and b have left the window
    assert monitor.observe("p", ["d"], at(12)) is None
    assert monitor.observe("p", ["e"], at(13)) is not None


def test_one_call_over_many_customers_can_cross_the_rate_and_ids_are_capped() -> None:
    monitor = ReadRateMonitor(rate=5, window_seconds=60)
    many = [f"c{n}" for n in range(MAX_ALERT_CUSTOMERS + 50)]
    event = raised(monitor.observe("lister", many, at(0)))
    assert event.distinct_customers == len(many)
    assert event.customer_ids == many[-MAX_ALERT_CUSTOMERS:]


def test_rate_zero_turns_the_rule_off() -> None:
    monitor = ReadRateMonitor(rate=0, window_seconds=60)
    assert monitor.observe("p", [f"c{n}" for n in range(1000)], at(0)) is None


def test_settings_come_from_the_environment_and_bad_values_are_named() -> None:
    settings = Settings.from_env({"LEDGER_READ_ALERT_RATE": "50", "LEDGER_READ_ALERT_WINDOW": "30"})
    assert (settings.read_alert_rate, settings.read_alert_window_seconds) == (50, 30.0)
    defaults = Settings.from_env({})
    assert (defaults.read_alert_rate, defaults.read_alert_window_seconds) == (200, 60.0)
    for variable, value in (
        ("LEDGER_READ_ALERT_RATE", "many"),
        ("LEDGER_READ_ALERT_RATE", "-1"),
        ("LEDGER_READ_ALERT_RATE", "2.5"),
        ("LEDGER_READ_ALERT_WINDOW", "soon"),
        ("LEDGER_READ_ALERT_WINDOW", "-5"),
    ):
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env({variable: value})
