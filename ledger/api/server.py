"""The gRPC server: the three services behind one authentication and authorisation gate,
plus health checking and reflection (so `grpcurl` can list and call everything).

`build_server` wires a running server around an open ledger (tests use it on port 0);
`serve` is `ledger serve` and `server.py`: it opens the configured store, serves until
SIGTERM or SIGINT, then stops taking calls, lets in-flight calls finish (up to
LEDGER_SHUTDOWN_GRACE_SECONDS), ends followed streams, and closes the store. While serving
it signs and publishes tree heads every LEDGER_TREE_HEAD_SECONDS and LEDGER_TREE_HEAD_EVERY
events, and once more on the way out.

Operations (ledger.observability): every call is counted, timed and logged as one line by
the gate; with LEDGER_METRICS_LISTEN / --metrics-listen the server answers Prometheus
scrapes on that address; a background probe of the event store turns health NOT_SERVING
while the store does not answer and SERVING again when it does.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from ledger.api import redaction
from ledger.api.access import AccessLog, AuditedAccess
from ledger.api.api_store import ApiStore, open_api_store
from ledger.api.audit_service import AuditService
from ledger.api.auth import Authenticator
from ledger.api.authz import ROLES
from ledger.api.compliance_service import ComplianceService
from ledger.api.customer_service import CustomerService
from ledger.api.refusals import RefusalLog
from ledger.api.rpc import Gate, service_handler
from ledger.api.streams import OtherStreamsLimit, StreamSlots
from ledger.api.tokens import TokenVerifier
from ledger.application import CustomerLedger
from ledger.audit.read_alerts import ReadRateMonitor
from ledger.bootstrap import open_ledger
from ledger.config import ConfigError, Settings
from ledger.consent.reads import PurposeReads
from ledger.observability import logs
from ledger.observability.backup_state import state_file
from ledger.observability.calls import CallObserver
from ledger.observability.health import StoreProbe, store_check
from ledger.observability.metrics import LedgerMetrics, LedgerState
from ledger.policy.source import PolicySource
from ledger.signing import LedgerSigner
from ledger.v1 import audit_service_pb2, compliance_service_pb2, customer_service_pb2

log = logging.getLogger("ledger.api")

SERVICES = (
    customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"],
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
    compliance_service_pb2.DESCRIPTOR.services_by_name["ComplianceService"],
)


@dataclass
class ApiServer:
    server: grpc.Server
    port: int
    address: str
    health: health.HealthServicer
    stopping: threading.Event
    store: ApiStore
    gate: Gate | None = None
    metrics: LedgerMetrics | None = None
    probe: StoreProbe | None = None
    metrics_http: WSGIServer | None = None

    @property
    def metrics_port(self) -> int | None:
        """The Prometheus endpoint's port (None: not serving metrics)."""
        return None if self.metrics_http is None else int(self.metrics_http.server_port)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, finish in-flight ones within `grace` seconds, write the
        refused-authentication counts still held, then close."""
        self.stopping.set()
        if self.probe is not None:
            self.probe.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.gate is not None:
            self.gate.refusals.flush()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()
        self.store.close()


def split_listen(
    listen: str, setting: str = "LEDGER_LISTEN / --listen", example: str = "127.0.0.1:50051"
) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{setting}: expected HOST:PORT, e.g. {example}")
    return host.strip("[]"), int(port)


METRICS_SETTING = "LEDGER_METRICS_LISTEN / --metrics-listen"


def _metrics_endpoint(metrics: LedgerMetrics, settings: Settings, listen: str) -> WSGIServer:
    """The scrape endpoint: plain HTTP on loopback; elsewhere HTTPS with the API's own
    certificate, or plain behind a proxy only when LEDGER_ALLOW_PLAINTEXT says so. The
    figures hold no personal data, but who reads them learns load and alert counts."""
    host, port = split_listen(listen, METRICS_SETTING, "127.0.0.1:9464")
    api = settings.api
    tls = api.tls_cert_file is not None and api.tls_key_file is not None
    if not tls and not _is_loopback(host) and not api.allow_plaintext:
        raise ConfigError(
            f"refusing to serve metrics on {listen} without TLS: listen on a loopback address, "
            "configure LEDGER_TLS_CERT_FILE and LEDGER_TLS_KEY_FILE, or set "
            "LEDGER_ALLOW_PLAINTEXT=true behind a TLS-terminating proxy"
        )
    try:
        http, _ = start_http_server(
            port,
            addr=host,
            registry=metrics.registry,
            certfile=str(api.tls_cert_file) if tls else None,
            keyfile=str(api.tls_key_file) if tls else None,
        )
    except OSError as exc:
        raise ConfigError(
            f"{METRICS_SETTING}: cannot listen on {listen} ({exc.strerror})"
        ) from None
    return http


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path} ({exc.strerror})") from None


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    api = settings.api
    if api.tls_cert_file is None or api.tls_key_file is None:
        return None
    key = _read(api.tls_key_file, "LEDGER_TLS_KEY_FILE")
    cert = _read(api.tls_cert_file, "LEDGER_TLS_CERT_FILE")
    client_ca = (
        _read(api.tls_client_ca_file, "LEDGER_TLS_CLIENT_CA_FILE")
        if api.tls_client_ca_file is not None
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def grpc_server(workers: int, interceptors: Sequence[grpc.ServerInterceptor] = ()) -> grpc.Server:
    """The gRPC server as `ledger serve` runs it (the benchmark's no-op baseline runs the
    same): a pool of `workers` request threads, and no port sharing with other processes."""
    return grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ledger-api"),
        interceptors=list(interceptors),
        options=[("grpc.so_reuseport", 0)],
    )


def set_switch_interval() -> None:
    """The group committer thread does a few database round trips per batch and needs the
    GIL back after each; with the default 5 ms switch interval, dozens of busy request
    threads made it wait up to 5 ms per round trip (a convoy: batches took ~50 ms)."""
    sys.setswitchinterval(float(os.environ.get("LEDGER_SWITCH_INTERVAL", "0.0005")))


def _token_key(settings: Settings) -> LedgerSigner:
    """The server is the authority on its token key: a new ledger gets one with its other
    secrets, and a ledger that predates the API gets one here (nothing stored depends on
    it: only tokens, none of which can exist yet). `ledger token issue` never creates one,
    so it cannot sign with a key the server does not know."""
    path = settings.resolved_token_key_file
    if not path.exists():
        log.info("no API token key yet: creating %s (LEDGER_TOKEN_KEY_FILE)", path)
    return LedgerSigner.load_or_create(path)


def build_server(
    ledger: CustomerLedger,
    settings: Settings,
    *,
    listen: str | None = None,
    access_log: AccessLog | None = None,
    metrics_listen: str | None = None,
    policy: PolicySource | None = None,
) -> ApiServer:
    """Start serving `ledger` on `listen` (port 0 picks a free port; see `ApiServer.port`),
    and metrics on `metrics_listen` (else LEDGER_METRICS_LISTEN; neither: no endpoint)."""
    address = listen or settings.api.listen
    host, _ = split_listen(address)
    credentials = _credentials(settings)
    if credentials is None and not _is_loopback(host) and not settings.api.allow_plaintext:
        raise ConfigError(
            f"refusing to serve {address} without TLS: configure LEDGER_TLS_CERT_FILE and "
            "LEDGER_TLS_KEY_FILE (and LEDGER_TLS_CLIENT_CA_FILE for mTLS), listen on a loopback "
            "address, or set LEDGER_ALLOW_PLAINTEXT=true behind a TLS-terminating proxy"
        )
    metrics_address = metrics_listen or settings.api.metrics_listen
    if metrics_address is not None:
        split_listen(metrics_address, METRICS_SETTING, "127.0.0.1:9464")
    redaction.install()
    token_signer = _token_key(settings)
    store = open_api_store(settings)
    stopping = threading.Event()
    monitor = ReadRateMonitor(settings.read_alert_rate, settings.read_alert_window_seconds)
    default_access = AuditedAccess(ledger, monitor)
    chosen_log = access_log if access_log is not None else default_access
    metrics = LedgerMetrics()
    ledger.committer.observe_batch = metrics.batch_size.observe
    api = settings.api
    gate = Gate(
        Authenticator(
            TokenVerifier(token_signer.public_key_pem(), ROLES),
            store,
            recheck_seconds=api.stream_recheck_seconds,
        ),
        chosen_log,
        refusals=RefusalLog(chosen_log, window_seconds=api.auth_refusal_window_seconds),
        streams=StreamSlots(api.stream_slots, api.max_streams_per_principal),
        observer=CallObserver(metrics),
        reads=PurposeReads(ledger, policy),
    )
    others = OtherStreamsLimit(gate.streams, tuple(s.full_name for s in SERVICES))
    implementations: dict[str, object] = {
        "CustomerService": CustomerService(ledger, store),
        "AuditService": AuditService(ledger, stopping),
        "ComplianceService": ComplianceService(ledger, store, policy),
    }
    server = grpc_server(settings.api.workers, [others])
    server.add_generic_rpc_handlers(
        tuple(service_handler(s, implementations[s.name], gate) for s in SERVICES)
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_names = ("", *(s.full_name for s in SERVICES))
    for name in health_names:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    def store_changed(up: bool) -> None:
        metrics.store_up.set(1 if up else 0)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if up
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in health_names:
            health_servicer.set(name, status)

    check, close_check = store_check(ledger, settings)
    probe = StoreProbe(
        check, store_changed, seconds=settings.api.health_probe_seconds, close=close_check
    )
    metrics.watch(
        LedgerState(
            ledger,
            monitor,
            state_file(settings.resolved_data_dir),
            store_up=lambda: probe.up,
        )
    )
    reflection.enable_server_reflection(
        (*(s.full_name for s in SERVICES), health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if not port:
        store.close()
        raise ConfigError(f"cannot listen on {address} (in use, or not an address of this host)")
    metrics_http = None
    if metrics_address is not None:
        try:
            metrics_http = _metrics_endpoint(metrics, settings, metrics_address)
        except BaseException:
            server.stop(None)
            store.close()
            raise
    server.start()
    probe.start()
    return ApiServer(
        server, port, address, health_servicer, stopping, store, gate, metrics, probe, metrics_http
    )


def serve(
    settings: Settings,
    *,
    listen: str | None = None,
    announce: Callable[[ApiServer], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully. Returns the exit code."""
    stop = threading.Event()
    set_switch_interval()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with open_ledger(settings) as ledger:
            # Heads signed and published while serving, not only at the end (bounded window
            # for a database insider, even after a crash); the ledger's close signs last.
            ledger.start_tree_head_signer()
            api = build_server(ledger, settings, listen=listen)
            schedule = None
            if settings.retention_schedule_seconds > 0:
                from ledger.policy.schedule import RetentionSchedule

                schedule = RetentionSchedule(ledger, settings.retention_schedule_seconds)
                schedule.start()
                log.info("retention every %gs", settings.retention_schedule_seconds)
            log.info("serving on port %d", api.port)
            if api.metrics_port is not None:
                log.info("metrics on port %d (/metrics)", api.metrics_port)
            if announce is not None:
                announce(api)
            try:
                while not stop.wait(0.5):
                    pass
            finally:
                log.info("shutting down: finishing in-flight calls")
                if schedule is not None:
                    schedule.stop()
                api.stop(settings.api.shutdown_grace_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def announce_line(api: ApiServer, settings: Settings, *, as_json: bool) -> None:
    host, _ = split_listen(api.address)
    mode = "mTLS" if settings.api.mutual_tls else "TLS" if settings.api.tls else "plaintext"
    metrics = api.metrics_port
    if as_json:
        announced: dict[str, object] = {"host": host, "port": api.port, "transport": mode}
        if metrics is not None:
            announced["metrics_port"] = metrics
        line = json.dumps(announced)
    else:
        line = f"ledger: serving gRPC on {host}:{api.port} ({mode}); SIGTERM or Ctrl-C stops"
        if metrics is not None:
            line += f"; metrics on port {metrics} (/metrics)"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """`server.py`: everything from LEDGER_* settings."""
    try:
        settings = Settings.from_env()
        logs.configure(settings.api.log_format)
        return serve(settings, announce=lambda api: announce_line(api, settings, as_json=False))
    except ConfigError as exc:
        print(f"ledger: configuration error: {exc}", file=sys.stderr)
        return 2
