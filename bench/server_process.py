"""A real `ledger serve` process for benchmarks and tests: started on a free loopback port
over a given store, driven through the gRPC API, stopped (SIGTERM) or killed (SIGKILL).

The server is a separate process on purpose: the figures then include everything a caller
pays (protobuf, HTTP/2, the server's thread pool, its GIL), and a kill is a real crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ledger.api.tokens import issue_token
from ledger.config import Settings
from ledger.signing import LedgerSigner

LEDGER = [sys.executable, "-c", "import sys; from ledger.cli.main import main; sys.exit(main())"]


def server_env(store_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(LEDGER_STORE=store_url, LEDGER_DATA_DIR=str(data_dir), **extra)
    return env


def bench_token(data_dir: Path, store_url: str, roles: list[str], principal: str = "bench") -> str:
    """A bearer token signed with the server's token key (created here if it is the
    first use, before the server starts, so both sides load the same file)."""
    settings = Settings(store_url=store_url, data_dir=data_dir)
    signer = LedgerSigner.load_or_create(settings.resolved_token_key_file)
    return issue_token(signer, principal, roles, timedelta(hours=2))


class ServerProcess:
    """`ledger serve --listen 127.0.0.1:0 --json` as a child process."""

    def __init__(
        self, store_url: str, data_dir: Path, *, log: IO[bytes] | None = None, **env: str
    ) -> None:
        self.env = server_env(store_url, data_dir, **env)
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [*LEDGER, "serve", "--listen", "127.0.0.1:0", "--json"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log if log is not None else subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait(timeout=30)
            raise RuntimeError(f"ledger serve exited ({code}) before announcing its port")
        announced: dict[str, Any] = json.loads(line)
        self.port = int(announced["port"])
        self.target = f"127.0.0.1:{self.port}"
        self._wait_serving()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # untyped generated stub
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.05)

    def status(self, field: str) -> int:
        """A /proc/PID/status figure in KiB (VmHWM: peak resident set; VmRSS: now)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM: finish in-flight calls, close the store, exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash."""
        self.process.kill()
        self.process.wait(timeout=30)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill()
