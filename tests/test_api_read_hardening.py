"""Reads and refusals on record, credentials that end open streams, stream limits that
leave unary calls room, and field histories that do not betray hidden values: a real server
on a loopback port over both stores."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from eventsourcing.utils import get_topic
from google.type import date_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ledger.api.access import AuthenticationRefusal
from ledger.api.tokens import issue_token
from ledger.cli.main import main as cli
from ledger.client import LedgerClient, error_details
from ledger.config import ConfigError, Settings
from ledger.signing import LedgerSigner
from ledger.v1 import audit_service_pb2 as audit
from ledger.v1 import resources_pb2
from tests.api_support import Api, api, code_of, customer, fails, start_api
from tests.helpers import StoreHandle

__all__ = ["api"]

Code = grpc.StatusCode
PDS = resources_pb2.PersonalDataState


def refusals(api: Api) -> list[AuthenticationRefusal.Refused]:
    topic = get_topic(AuthenticationRefusal.Refused)
    found = api.ledger.recorder.select_notifications(start=1, limit=10_000, topics=[topic])
    return [api.ledger.mapper.to_domain_event(n) for n in found]  # type: ignore[misc]


# Refused authentication -------------------------------------------------------------------


def test_refused_authentication_is_recorded_and_logged_without_the_token(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    name = api.client("root", "admin").create_customer(customer()).name
    signer = LedgerSigner.load_or_create(api.settings.resolved_token_key_file)
    expired = issue_token(
        signer, "root", ["admin"], timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2)
    )
    forged = issue_token(LedgerSigner.generate(), "mallory", ["admin"], timedelta(hours=1))
    revoked = api.client("crm-sync", "service")
    assert cli(["token", "revoke", "crm-sync", "--store", api.settings.store_url]) == 0
    caplog.set_level(logging.WARNING, logger="ledger.api")
    tokens = {"expired": expired, "forged": forged}
    fails(lambda: api.anonymous().get_customer(name), Code.UNAUTHENTICATED)
    for token in tokens.values():
        fails(lambda t=token: LedgerClient(api.target, token=t).get_customer(name),  # type: ignore[misc]
              Code.UNAUTHENTICATED)  # fmt: skip
    fails(lambda: revoked.get_customer(name), Code.UNAUTHENTICATED)

    found = {(r.reason, r.principal): r for r in refusals(api)}
    assert set(found) == {
        ("UNAUTHENTICATED", ""),
        ("TOKEN_INVALID", ""),  # forged: its claimed subject is never believed
        ("TOKEN_EXPIRED", "root"),  # the signature verified: the subject is named
        ("CREDENTIALS_REVOKED", "crm-sync"),
    }
    for record in found.values():
        assert record.method == "/ledger.v1.CustomerService/GetCustomer"
        assert record.peer.startswith(("ipv4:127.0.0.1", "ipv6:")) and record.refusals == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged.count("refused authentication") == 4
    assert "mallory" not in logged
    for token in (*tokens.values(), revoked.metadata[0][1]):
        for part in token.removeprefix("Bearer ").split("."):
            assert part not in logged

    # Auditors see them in the access log as refusals.
    inspector = api.client("inspector", "auditor")
    listed = inspector.audit.ListAccessLog(
        audit.ListAccessLogRequest(filter='outcome = "DENIED"'), metadata=inspector.metadata
    )
    reasons = sorted(r.reason for r in listed.records)
    assert "UNAUTHENTICATED: TOKEN_EXPIRED" in reasons
    assert "UNAUTHENTICATED: CREDENTIALS_REVOKED" in reasons


def test_a_flood_of_bad_tokens_is_coalesced_and_counted(api: Api) -> None:
    name = api.client("root", "admin").create_customer(customer()).name
    flooder = LedgerClient(api.target, token="not-a-token")
    for _ in range(40):
        fails(lambda: flooder.get_customer(name), Code.UNAUTHENTICATED)
    flooder.close()
    gate = api.server.gate
    assert gate is not None
    gate.refusals.flush()
    records = [r for r in refusals(api) if r.reason == "TOKEN_INVALID"]
    assert len(records) <= 3  # one per window, not one per call
    assert sum(r.refusals for r in records) == 40  # nothing dropped uncounted


# Credentials checked while a stream runs -----------------------------------------------------


class Follower:
    """A follow stream read on a thread: what it received and how it ended."""

    def __init__(self, api: Api, token: str) -> None:
        client = LedgerClient(api.target, token=token, timeout=None)
        api.clients.append(client)
        self.stream: Any = client.audit.StreamEvents(
            audit.StreamEventsRequest(start_position=1, follow=True, event_types=["Registered"]),
            metadata=client.metadata,
        )
        self.received: list[resources_pb2.LedgerEvent] = []
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.stream:
                self.received.extend(response.events)
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.ended.set()

    def wait_for(self, count: int, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= count

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(5)


def test_revocation_ends_an_open_follow_stream(api: Api) -> None:
    writer = api.client("crm-sync", "service")
    writer.create_customer(customer())
    follower = Follower(api, api.token("replica", "service"))
    try:
        follower.wait_for(1)
        assert follower.received[0].HasField("personal_data")  # it reads personal data
        revoked_at = time.monotonic()
        assert cli(["token", "revoke", "replica", "--store", api.settings.store_url]) == 0
        assert follower.ended.wait(3), "the stream outlived its revoked credential"
        assert time.monotonic() - revoked_at < 2.5
        assert follower.error is not None and code_of(follower.error) == Code.UNAUTHENTICATED
        assert error_details(follower.error)["reason"] == "CREDENTIALS_REVOKED"
        writer.create_customer(customer(given_name="Grace"))
        assert len(follower.received) == 1
        assert any(r.reason == "CREDENTIALS_REVOKED" and r.principal == "replica"
                   for r in refusals(api))  # fmt: skip
    finally:
        follower.close()


def test_an_expiring_token_ends_an_open_follow_stream(api: Api) -> None:
    writer = api.client("crm-sync", "service")
    writer.create_customer(customer())
    follower = Follower(api, api.token("replica", "service", ttl=timedelta(seconds=2)))
    try:
        follower.wait_for(1)
        assert follower.ended.wait(5), "the stream outlived its token"
        assert follower.error is not None and code_of(follower.error) == Code.UNAUTHENTICATED
        assert error_details(follower.error)["reason"] == "TOKEN_EXPIRED"
        writer.create_customer(customer(given_name="Grace"))
        time.sleep(0.3)
        assert len(follower.received) == 1
    finally:
        follower.close()


# Stream limits --------------------------------------------------------------------------------


@pytest.fixture
def small_pool(store: StoreHandle) -> Iterator[Api]:
    """Four workers, at most three streams, two per principal."""
    settings = store.settings
    settings = replace(
        settings,
        api=replace(settings.api, workers=4, max_streams=3, max_streams_per_principal=2),
    )
    started = start_api(store, settings)
    try:
        yield started
    finally:
        started.close()


def _exhausted(follower: Follower) -> dict[str, Any]:
    assert follower.ended.wait(5)
    assert follower.error is not None
    assert code_of(follower.error) == Code.RESOURCE_EXHAUSTED, follower.error
    return error_details(follower.error)


def test_streams_are_capped_and_never_starve_unary_calls(small_pool: Api) -> None:
    api = small_pool
    name = api.client("crm-sync", "service").create_customer(customer()).name
    auditor, other, third = (api.token(p, "auditor") for p in ("inspector", "examiner", "third"))
    followers: list[Follower] = []
    try:
        for token in (auditor, auditor, other):  # the server's three slots
            followers.append(Follower(api, token))
            followers[-1].wait_for(1)
        extra = [Follower(api, auditor), Follower(api, other), Follower(api, third)]
        followers += extra
        assert _exhausted(extra[0])["metadata"]["scope"] == "for this principal"
        for refused in extra[1:]:
            details = _exhausted(refused)
            assert details["reason"] == "TOO_MANY_STREAMS"
            assert details["metadata"] == {"limit": "3", "scope": "on this server"}

        # Unary calls and the health check still answer promptly.
        reader = LedgerClient(api.target, token=api.token("crm-sync", "service"), timeout=2)
        api.clients.append(reader)
        started = time.monotonic()
        assert reader.get_customer(name).given_name == "Ada"
        health = health_pb2_grpc.HealthStub(reader.channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert time.monotonic() - started < 2
        assert not any(f.ended.is_set() for f in followers[:3])

        # A closed stream frees its slot.
        followers[0].close()
        deadline = time.monotonic() + 5
        while True:
            again = Follower(api, third)
            followers.append(again)
            if not again.ended.wait(0.5):
                break
            assert time.monotonic() < deadline, "the closed stream's slot was never freed"
    finally:
        for follower in followers:
            follower.close()


def test_max_streams_must_leave_workers_for_unary_calls() -> None:
    with pytest.raises(ConfigError, match="LEDGER_MAX_STREAMS"):
        Settings.from_env({"LEDGER_API_WORKERS": "8", "LEDGER_MAX_STREAMS": "8"})
    settings = Settings.from_env({"LEDGER_API_WORKERS": "8"})
    assert settings.api.max_streams == 4 and settings.api.max_streams_per_principal == 4


# What a masked role learns ---------------------------------------------------------------------


def _comparable(message: Any) -> Any:
    """A message without what differs between any two customers (names, ids, times)."""
    copy = type(message)()
    copy.CopyFrom(message)
    for field in ("name", "customer", "stream_id", "event_time", "change_time", "create_time",
                  "update_time", "etag", "position"):  # fmt: skip
        if field in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(field)
    return copy


def test_a_masked_role_learns_nothing_from_values_it_may_not_see(api: Api) -> None:
    writer = api.client("crm-sync", "service")
    with_birth_date = writer.create_customer(
        customer(birth_date=date_pb2.Date(year=1985, month=12, day=10))
    ).name
    without = writer.create_customer(customer()).name
    auditor = api.client("inspector", "auditor")

    histories = [auditor.get_field_history(n, "birth_date") for n in (with_birth_date, without)]
    shaped = [[_comparable(c) for c in h] for h in histories]
    assert shaped[0] == shaped[1]
    assert [c.value_state for c in histories[0]] == [PDS.PERSONAL_DATA_STATE_REDACTED]
    # With the role that reads the values, the difference is real.
    admin = api.client("root", "admin")
    assert len(admin.get_field_history(with_birth_date, "birth_date")) == 1
    assert admin.get_field_history(without, "birth_date") == []

    # The same holds for the events and past states the auditor sees.
    events = [[_comparable(e) for e in auditor.list_customer_events(n)]
              for n in (with_birth_date, without)]  # fmt: skip
    assert events[0] == events[1]
    past = [_comparable(auditor.get_customer_as_of(n, version=1))
            for n in (with_birth_date, without)]  # fmt: skip
    assert past[0] == past[1]
    streamed = [_comparable(e) for e in auditor.stream_events(event_types=["Registered"])]
    assert len(streamed) == 2 and streamed[0] == streamed[1]


def test_unauthenticated_streams_cannot_occupy_the_workers(small_pool: Api) -> None:
    """Health `Watch` needs no credentials and holds a worker while open: it shares the
    stream slots (per peer address), so watchers cannot starve the API either."""
    api = small_pool
    name = api.client("crm-sync", "service").create_customer(customer()).name
    channel = grpc.insecure_channel(api.target)
    health = health_pb2_grpc.HealthStub(channel)
    watches: list[Any] = []
    try:
        admitted, refused = [], []
        for _ in range(4):  # as many as the pool has workers
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            watches.append(watch)
            try:
                admitted.append(next(watch).status)
            except grpc.RpcError as error:
                refused.append(error_details(error))
        assert admitted == [health_pb2.HealthCheckResponse.SERVING] * 2
        assert [r["reason"] for r in refused] == ["TOO_MANY_STREAMS"] * 2
        reader = LedgerClient(api.target, token=api.token("crm-sync", "service"), timeout=2)
        api.clients.append(reader)
        assert reader.get_customer(name).given_name == "Ada"
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1
    finally:
        for watch in watches:
            watch.cancel()
        channel.close()
