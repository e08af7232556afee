"""A real Prometheus server (the Debian `prometheus` package) scrapes `ledger serve`'s
metrics endpoint and can query the figures: the exposition is what Prometheus itself
accepts, not only what the client library's parser reads. Skipped where the package is not
installed (CI does not install it; test_api_metrics parses the same endpoint there)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ledger.api.server import build_server
from ledger.client import LedgerClient
from tests.api_support import Api, api, customer

__all__ = ["api"]

PROMETHEUS = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _query(port: int, expression: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
    except OSError:
        return []  # not up yet
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus package is not installed")
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_real_prometheus_scrapes_the_endpoint(tmp_path: Path, api: Api) -> None:
    # The `api` fixture's server has no endpoint: start one beside it on the same ledger.
    server = build_server(
        api.ledger, api.settings, listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"
    )
    try:
        target = f"127.0.0.1:{server.port}"
        with LedgerClient(target, token=api.token("ops", "admin")) as direct:
            for n in range(3):
                direct.create_customer(customer(given_name=f"P{n}"))
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: ledger\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{server.metrics_port}']}}]\n"
        )
        web = _free_port()
        assert PROMETHEUS is not None
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            expression = (
                'ledger_grpc_calls_total{job="ledger",'
                'method="/ledger.v1.CustomerService/CreateCustomer",code="OK"}'
            )
            deadline = time.monotonic() + 30
            found: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not found:
                found = _query(web, expression)
                time.sleep(0.3)
            assert found, "Prometheus never scraped the endpoint"
            assert float(found[0]["value"][1]) == 3
            assert [float(r["value"][1]) for r in _query(web, 'up{job="ledger"}')] == [1]
            assert _query(web, "ledger_group_commit_batch_size_count")
            assert _query(web, "ledger_store_up")[0]["value"][1] == "1"
        finally:
            process.terminate()
            process.wait(10)
    finally:
        server.stop(0)
