"""gRPC health follows the event store: NOT_SERVING (and `ledger_store_up` 0) within
seconds of PostgreSQL stopping, SERVING again once it is back. The cluster is this test's
own (initdb and pg_ctl in a temporary directory, on a free port): stopping the machine's
shared server would break every other test running against it."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from ledger.api.server import build_server
from ledger.bootstrap import open_ledger
from ledger.config import ApiSettings, Settings
from tests.api_support import Api, customer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        pytest.skip(f"{name} (PostgreSQL server binaries) not installed")
    return found[-1]


def _as_postgres(*command: str) -> list[str]:
    """initdb refuses to run as root: run the cluster as the postgres OS user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    def __init__(self, root: Path, port: int) -> None:
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.root = root
        self.port = port

    def run(self, *args: str) -> None:
        subprocess.run(_as_postgres(_bin("pg_ctl"), *args), check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    made = Cluster(root, _free_port())
    subprocess.run(
        _as_postgres(_bin("initdb"), "-D", str(made.data), "-A", "trust", "-U", "postgres", "-N"),
        check=True,
        capture_output=True,
    )
    made.start()
    try:
        yield made
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            made.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def _health(stub: health_pb2_grpc.HealthStub, service: str = "") -> int:
    try:
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    except grpc.RpcError:
        return -1
    return status


def _wait_for(stub: health_pb2_grpc.HealthStub, wanted: int, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if _health(stub) == wanted:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"health never became {wanted} within {seconds}s")


def _store_up(port: int | None) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ledger_store_up":
                return float(sample.value)
    raise AssertionError("no ledger_store_up")


def test_health_follows_a_postgresql_stop_and_start(cluster: Cluster, tmp_path: Path) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{cluster.port}"
    with psycopg.connect(f"{dsn}/postgres", autocommit=True) as admin:
        admin.execute("CREATE DATABASE ledger")
    settings = Settings(
        store_url=f"{dsn}/ledger",
        data_dir=tmp_path / "ledger-data",
        api=replace(ApiSettings(), health_probe_seconds=0.2),
    )
    ledger = open_ledger(settings)
    try:
        server = build_server(ledger, settings, listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    except BaseException:
        ledger.close()
        raise
    api = Api(ledger=ledger, server=server, settings=settings)
    channel = grpc.insecure_channel(api.target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        admin = api.client("ops", "admin")
        admin.create_customer(customer())
        assert _health(stub) == SERVING
        assert _store_up(server.metrics_port) == 1

        cluster.stop()
        assert _wait_for(stub, NOT_SERVING, 5) < 5
        assert _health(stub, "ledger.v1.CustomerService") == NOT_SERVING
        assert _store_up(server.metrics_port) == 0  # the scrape answers while the store is down

        cluster.start()
        assert _wait_for(stub, SERVING, 10) < 10
        assert _health(stub, "ledger.v1.CustomerService") == SERVING
        assert _store_up(server.metrics_port) == 1
        for attempt in range(5):  # the pool's connections died with the server: retryable
            try:
                admin.create_customer(customer(given_name="Back"))
                break
            except grpc.RpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)  # type: ignore[attr-defined]
                time.sleep(0.2 * (attempt + 1))
        else:
            raise AssertionError("the ledger did not serve again after the store came back")
    finally:
        channel.close()
        api.close()
