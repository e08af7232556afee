"""The operations surface of `ledger serve`: the Prometheus endpoint shows what a load did
(calls by method and status, latency, group-commit batches, projection lag, tree-head age,
erasures, read-rate alerts, refused authentications, backup age, store up), and every call
is one JSON log line that carries no personal data."""

from __future__ import annotations

import json
import logging
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger.api.server import ApiServer, build_server
from ledger.config import ConfigError, Settings
from ledger.observability.logs import JsonFormatter
from tests.api_support import ADA, Api, code_of, customer
from tests.helpers import StoreHandle

CREATE = "/ledger.v1.CustomerService/CreateCustomer"
GET = "/ledger.v1.CustomerService/GetCustomer"
ERASE = "/ledger.v1.ComplianceService/EraseCustomer"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ApiServer) -> Samples:
    """Every sample of one scrape, keyed by (name, sorted labels)."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def metered(store: StoreHandle) -> Iterator[Api]:
    # A low read-rate threshold, so that a handful of reads raises an alert.
    settings = replace(store.settings, read_alert_rate=2, read_alert_window_seconds=60)
    ledger = store.open()
    try:
        ledger.start_tree_head_signer()
        server = build_server(ledger, settings, listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    except BaseException:
        ledger.close()
        raise
    started = Api(ledger=ledger, server=server, settings=settings)
    try:
        yield started
    finally:
        started.close()


def test_metrics_endpoint_shows_a_load_and_logs_one_json_line_per_call(
    metered: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ledger")
    before = scrape(metered.server)
    assert value(before, "ledger_store_up") == 1
    assert value(before, "ledger_backup_last_success_timestamp_seconds") == 0  # none yet

    admin = metered.client("ops-admin", "admin")
    created = [
        admin.create_customer(customer(given_name=name, emails=[f"{name.lower()}@example.org"]))
        for name in ("Ada", "Grace", "Hedy")
    ]
    for made in created:
        admin.get_customer(made.name)
    with pytest.raises(grpc.RpcError) as refused:
        metered.anonymous().get_customer(created[0].name)
    assert code_of(refused.value) == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as denied:
        metered.client("ops-reader", "auditor").erase_customer(
            created[1].name, legal_basis="GDPR Art. 17", reason="r"
        )
    assert code_of(denied.value) == grpc.StatusCode.PERMISSION_DENIED
    metered.client("dpo", "compliance").erase_customer(
        created[2].name, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request"
    )
    backed_up = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
    state = metered.settings.resolved_data_dir / "backup-state.json"
    state.write_text(json.dumps({"last_success": backed_up.isoformat()}))
    assert metered.ledger.projections is not None
    metered.ledger.projections.wait_until_caught_up()
    metered.ledger.tree_head_signer.sign_now()  # type: ignore[union-attr]

    after = scrape(metered.server)
    assert value(after, "ledger_grpc_calls_total", method=CREATE, code="OK") == 3
    assert value(after, "ledger_grpc_calls_total", method=GET, code="OK") == 3
    assert value(after, "ledger_grpc_calls_total", method=GET, code="UNAUTHENTICATED") == 1
    assert value(after, "ledger_grpc_calls_total", method=ERASE, code="PERMISSION_DENIED") == 1
    assert value(after, "ledger_grpc_calls_total", method=ERASE, code="OK") == 1
    assert value(after, "ledger_grpc_call_seconds_count", method=GET) == 4
    assert 0 < value(after, "ledger_grpc_call_seconds_sum", method=CREATE) < 30
    assert value(after, "ledger_grpc_call_seconds_bucket", method=CREATE, le="+Inf") == 3
    # Every create, read record and erasure went through the group committer.
    batches = value(after, "ledger_group_commit_batch_size_count")
    assert batches >= 1
    assert value(after, "ledger_group_commit_batch_size_sum") >= 3 + 1
    lags = {
        labels: v for (name, labels), v in after.items() if name == "ledger_projection_lag_events"
    }
    assert lags and all(v == 0 for v in lags.values())  # caught up
    assert {dict(labels)["projection"] for labels in lags} == set(metered.ledger.projections.names)
    assert 0 <= value(after, "ledger_tree_head_age_seconds") < 60
    assert value(after, "ledger_unsigned_events") == 0
    assert value(after, "ledger_erasures_total") == 1
    # Three distinct customers read by one principal past a rate of two: one alert.
    assert value(after, "ledger_access_alerts_total") == 1
    assert value(after, "ledger_access_alerts_active") == 1
    assert sum(v for (n, _), v in after.items() if n == "ledger_auth_refusals_total") == 1
    assert value(after, "ledger_backup_last_success_timestamp_seconds") == backed_up.timestamp()
    assert value(after, "ledger_store_up") == 1
    # Labels are bounded: no principal or customer id anywhere in the exposition.
    exposition = repr(sorted(after))
    for secret in ("ops-admin", "dpo", *(c.name.rsplit("/", 1)[-1] for c in created)):
        assert secret not in exposition

    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records]
    calls = [line for line in lines if line["logger"] == "ledger.api.calls"]
    assert len(calls) == 3 + 3 + 1 + 1 + 1
    by_method = {(c["method"], c["code"]) for c in calls}
    assert (GET, "UNAUTHENTICATED") in by_method and (ERASE, "PERMISSION_DENIED") in by_method
    for call in calls:
        assert set(call) >= {"ts", "level", "method", "code", "latency_ms", "principal", "peer"}
        assert call["latency_ms"] >= 0
    assert {c["principal"] for c in calls} == {"ops-admin", None, "ops-reader", "dpo"}
    alerts = [line for line in lines if line.get("event") == "read_rate_alert"]
    assert len(alerts) == 1 and alerts[0]["principal"] == "ops-admin"
    everything = "\n".join(json.dumps(line) for line in lines)
    tokens = [metered.token("ops-admin", "admin")]
    personal = [
        "Lovelace",
        "Grace",
        "Hedy",
        "ada@example.org",
        "grace@example.org",
        "7946",
        "SW1Y",
    ]
    for text in personal + tokens + [str(ADA["external_ids"]["CRM"])]:
        assert text not in everything, text


def test_a_metrics_address_off_loopback_needs_tls(store: StoreHandle) -> None:
    ledger = store.open()
    try:
        with pytest.raises(ConfigError, match=r"metrics on 0\.0\.0\.0:0 without TLS"):
            build_server(ledger, store.settings, listen="127.0.0.1:0", metrics_listen="0.0.0.0:0")
        with pytest.raises(ConfigError, match="LEDGER_METRICS_LISTEN"):
            build_server(ledger, store.settings, listen="127.0.0.1:0", metrics_listen="9464")
    finally:
        ledger.close()


def test_settings_read_the_operations_variables() -> None:
    env = {
        "LEDGER_METRICS_LISTEN": "127.0.0.1:9464",
        "LEDGER_HEALTH_PROBE_SECONDS": "0.5",
        "LEDGER_LOG_FORMAT": "text",
    }
    api = Settings.from_env(env).api
    assert (api.metrics_listen, api.health_probe_seconds, api.log_format) == (
        "127.0.0.1:9464",
        0.5,
        "text",
    )
    assert Settings.from_env({}).api.log_format == "json"
    assert Settings.from_env({}).api.metrics_listen is None
    with pytest.raises(ConfigError, match="LEDGER_LOG_FORMAT"):
        Settings.from_env({"LEDGER_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="LEDGER_HEALTH_PROBE_SECONDS"):
        Settings.from_env({"LEDGER_HEALTH_PROBE_SECONDS": "0"})


def test_json_lines_carry_fields_and_redact_tokens_in_tracebacks() -> None:
    formatter = JsonFormatter()
    try:
        raise RuntimeError("upstream said: Bearer eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl")
    except RuntimeError:
        record = logging.getLogger("ledger.test").makeRecord(
            "ledger.test",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("once",),
            sys.exc_info(),
            extra={"fields": {"event": "store_down", "customer_id": "c-1"}},
        )
    line = json.loads(formatter.format(record))
    assert line["message"] == "failed once"
    assert (line["level"], line["event"], line["customer_id"]) == ("error", "store_down", "c-1")
    assert "RuntimeError" in line["exception"]
    assert "eyJhbGciOi" not in line["exception"] and "[redacted token]" in line["exception"]
