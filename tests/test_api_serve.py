"""`ledger serve` and `server.py` as real processes: they announce their port, answer health
checks and reflection (what grpcurl needs), and on SIGTERM finish the calls in flight before
exiting 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from ledger.bootstrap import open_ledger
from ledger.cli.main import main as cli
from ledger.config import Settings
from ledger.v1 import audit_service_pb2, audit_service_pb2_grpc
from tests.test_api_audit import fill_log

ROOT = Path(__file__).resolve().parents[1]
LEDGER = str(Path(sys.executable).parent / "ledger")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(LEDGER_STORE=f"sqlite:///{data_dir / 'ledger.db'}", LEDGER_KEY_CACHE_SECONDS="1")
    return env


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


announced: dict[str, object] = {}


@contextmanager
def running(command: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else ""
        announced.clear()
        if line.startswith("{"):
            announced.update(json.loads(line))
        port = (
            json.loads(line)["port"] if line.startswith("{") else int(line.split(":")[2].split()[0])
        )
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_ledger_serve_health_reflection_and_graceful_shutdown(tmp_path: Path) -> None:
    env = _env(tmp_path)
    settings = Settings(store_url=env["LEDGER_STORE"])
    with open_ledger(settings) as ledger:
        fill_log(
            ledger, customers=6, events_each=500
        )  # more than flow control lets through at once
    token = subprocess.run(
        [LEDGER, "token", "issue", "--principal", "replica", "--role", "service"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    command = [LEDGER, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
    with running([*command, "--json"], env) as (process, port):
        metrics = _metrics(int(str(announced["metrics_port"])))
        assert metrics["ledger_store_up"] == 1
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest()).status == serving
        check = health_pb2.HealthCheckRequest(service="ledger.v1.CustomerService")
        assert health.Check(check).status == serving
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {"ledger.v1.CustomerService", "ledger.v1.AuditService"} <= services
        assert "ledger.v1.ComplianceService" in services

        stream = audit_service_pb2.StreamEventsRequest()
        responses = audit_service_pb2_grpc.AuditServiceStub(channel).StreamEvents(
            stream, metadata=[("authorization", f"Bearer {token}")]
        )
        # The replay's own reads are logged as it goes ("Recorded" events after position 3000).
        received = [e.position for e in next(responses).events if e.event_type != "Recorded"]
        process.send_signal(signal.SIGTERM)  # while the replay is in flight
        for response in responses:
            received.extend(e.position for e in response.events if e.event_type != "Recorded")
        assert received == list(range(1, 3001))
        assert process.wait(30) == 0
        channel.close()
        # `ledger serve` logs JSON lines by default: the stream's call line among them.
        assert process.stderr is not None
        lines = [json.loads(ln) for ln in process.stderr.read().splitlines() if ln.startswith("{")]
        calls = [line for line in lines if line.get("logger") == "ledger.api.calls"]
        assert [(c["method"], c["code"], c["principal"]) for c in calls] == [
            ("/ledger.v1.AuditService/StreamEvents", "OK", "replica")
        ]
        assert token not in json.dumps(lines)


def test_server_py_starts_from_the_environment(tmp_path: Path) -> None:
    env = _env(tmp_path) | {"LEDGER_LISTEN": "127.0.0.1:0"}
    with running([sys.executable, "server.py"], env) as (process, port):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_plaintext_on_a_public_address_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [LEDGER, "serve", "--listen", "0.0.0.0:0"],
        env=_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "without TLS" in result.stderr


def test_token_commands_refuse_mistakes_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", f"sqlite:///{tmp_path / 'ledger.db'}"]
    for args in (
        ["issue", "--principal", "not a name", "--role", "service"],
        ["issue", "--principal", "crm", "--role", "superuser"],
        ["issue", "--principal", "crm", "--role", "service", "--ttl", "forever"],
        ["revoke", "bad!name"],
    ):
        assert cli(["token", *args, *store]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, args
    # Issuing needs the ledger's token key: it comes with a new ledger, never with `issue`.
    open_ledger(Settings(store_url=store[1])).close()
    assert cli(["token", "issue", "--principal", "crm", "--role", "service", "--json", *store]) == 0
    assert json.loads(capsys.readouterr().out)["roles"] == ["service"]
