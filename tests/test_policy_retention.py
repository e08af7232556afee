"""The data policy in the log, legal holds, retention plan and apply, and staff handover,
on both stores: through the CLI as an operator types it, and through the real gRPC API.

Retention is tested by moving "now" (`--now`, `now=`), never by waiting: the periods are
real days counted from the real event timestamps in the log.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
import pytest

from ledger.application import CustomerLedger
from ledger.cli.main import EXIT_HELD, EXIT_INVALID
from ledger.config import ConfigError, Settings
from ledger.crypto_shred.certificate import SignedCertificate
from ledger.domain.customer import Customer
from ledger.domain.erased import ErasedValue
from ledger.domain.errors import CustomerOnHold
from ledger.policy import holds, retention
from ledger.policy.facts import CustomerFacts
from ledger.policy.handover import PERFORMED_TOPIC
from ledger.policy.log import APPLIED_TOPICS, PolicyLog
from ledger.policy.model import default_policy, parse_policy
from ledger.policy.schedule import RetentionSchedule
from ledger.v1 import compliance_service_pb2
from tests.api_support import customer, fails, start_api
from tests.helpers import StoreHandle, person, run_cli, use_store_in_cli

ACTOR = "dpo.test"
FAR = "2100-01-01"  # every rule of the default policy is due by then

SHORT_POLICY = """
name = "short"
[[purpose]]
key = "essential.service"
lawful_basis = "contract"
categories = ["user.name", "user.contact"]

[[retention]]
category = "user.contact"
keep_for_days = 30
after = "registration"

[[retention]]
category = "user.name"
keep_for_days = 100
after = "last_change"

[[retention]]
category = "user.demographic.date_of_birth"
keep_for_days = 10
after = "end_of_contract"
"""


@pytest.fixture
def cli_env(store: StoreHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    use_store_in_cli(store, monkeypatch, ACTOR)


def events_of_topics(store: StoreHandle, topics: tuple[str, ...]) -> int:
    ledger = store.open()
    try:
        return len(ledger.recorder.select_notifications(start=1, limit=10_000, topics=topics))
    finally:
        ledger.close()


def erased_events(ledger: CustomerLedger, customer_id: UUID) -> int:
    return sum(isinstance(e, Customer.Erased) for e in ledger.events.get(customer_id))


def personal(ledger: CustomerLedger, customer_id: UUID) -> dict[str, Any]:
    data = ledger.get(customer_id).personal
    assert isinstance(data, dict)
    return data


def register(ledger: CustomerLedger, **overrides: Any) -> UUID:
    return ledger.register(person(**overrides), actor=ACTOR)


# Policy versions -----------------------------------------------------------------------------


def test_policy_versions_are_events_and_a_bad_file_writes_nothing(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run_cli(capsys, "init")[0] == 0
    code, _, out = run_cli(capsys, "policy", "show", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["version"] == 0 and shown["policy"]["name"] == "default"  # shipped default
    assert {"field": "emails", "category": "user.contact.email"}.items() <= (
        next(row for row in shown["classification"] if row["field"] == "emails").items()
    )
    short = tmp_path / "short.toml"
    short.write_text(SHORT_POLICY, encoding="utf-8")
    assert run_cli(capsys, "policy", "apply", str(short), "--reason", "v1")[0] == 0
    assert run_cli(capsys, "policy", "apply", str(short.with_name("x.toml")))[0] == EXIT_INVALID
    yaml_file = tmp_path / "second.yaml"
    yaml_file.write_text(
        "name: second\npurpose:\n  - key: essential.service\n    lawful_basis: contract\n"
        "    categories: [user.name]\nretention:\n  - category: user.name\n"
        "    keep_for_days: 400\n    after: registration\n",
        encoding="utf-8",
    )
    code, err, out = run_cli(capsys, "policy", "apply", str(yaml_file), "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == 2
    assert events_of_topics(store, APPLIED_TOPICS) == 2

    bad = tmp_path / "bad.toml"
    bad.write_text(SHORT_POLICY.replace("keep_for_days = 30", "keep_for_days = -3"), "utf-8")
    code, err, _ = run_cli(capsys, "policy", "apply", str(bad))
    assert code == EXIT_INVALID and "retention[0].keep_for_days" in err
    typo = tmp_path / "typo.toml"
    typo.write_text(SHORT_POLICY.replace('"user.contact"]', '"user.contakt"]'), "utf-8")
    code, err, _ = run_cli(capsys, "policy", "apply", str(typo))
    assert code == EXIT_INVALID and "purpose[0].categories[1]" in err
    assert events_of_topics(store, APPLIED_TOPICS) == 2  # nothing written by either

    code, _, out = run_cli(capsys, "policy", "show", "--json")
    shown = json.loads(out)
    assert (shown["version"], shown["policy"]["name"], shown["actor"]) == (2, "second", ACTOR)
    code, _, text = run_cli(capsys, "policy", "show")
    assert "version 2" in text and "emails" in text and "user.contact.email" in text
    ledger = store.open()
    try:
        versions = PolicyLog(ledger).versions()
        assert [(v.version, v.policy.name, v.reason) for v in versions] == [
            (1, "short", "v1"),
            (2, "second", None),
        ]
        assert PolicyLog(ledger).current()[0] == 2
    finally:
        ledger.close()
    assert run_cli(capsys, "verify")[0] == 0  # the versions are covered by the Merkle log


def test_get_policy_over_the_api(store: StoreHandle) -> None:
    api = start_api(store)
    try:
        PolicyLog(api.ledger).apply(parse_policy(_toml(SHORT_POLICY)), actor=ACTOR)
        answer = api.client("auditor-1", "auditor").get_policy()
        assert (answer.version, answer.policy_name, answer.actor) == (1, "short", ACTOR)
        assert [(r.category, r.keep_for_days, r.after) for r in answer.retention_rules] == [
            ("user.contact", 30, "registration"),
            ("user.name", 100, "last_change"),
            ("user.demographic.date_of_birth", 10, "end_of_contract"),
        ]
        emails = next(c for c in answer.classification if c.field == "emails")
        assert (emails.category, emails.sensitivity) == ("user.contact.email", "personal")
        assert json.loads(answer.policy_json)["name"] == "short"
        assert answer.HasField("apply_time")
    finally:
        api.close()


def _toml(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


# Legal holds ---------------------------------------------------------------------------------


def test_a_hold_blocks_erasure_and_retention_for_one_customer_while_another_is_destroyed(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ledger = store.open()
    try:
        held, free = register(ledger), register(ledger, given_name="Frei")
    finally:
        ledger.close()
    assert run_cli(capsys, "hold", "add", str(held), "--reason", "case-2026-17")[0] == 0
    code, _, out = run_cli(capsys, "hold", "add", str(held), "--reason", "again", "--json")
    assert code == 0 and json.loads(out)["placed"] is False  # no second event
    code, err, out = run_cli(
        capsys, "erase", str(held), "--legal-basis", "GDPR Art. 17", "--reason", "request"
    )
    assert code == EXIT_HELD and "legal hold" in err and out == ""
    code, err, out = run_cli(
        capsys, "erase", str(held), "--category", "user.contact",
        "--legal-basis", "GDPR Art. 17", "--reason", "request",
    )  # fmt: skip
    assert code == EXIT_HELD and "legal hold" in err and out == ""
    folder = tmp_path / "certificates"
    code, _, out = run_cli(
        capsys, "retention", "apply", "--now", FAR, "--json", "--certificates", str(folder)
    )
    report = json.loads(out)
    assert code == 0
    assert [d["customer_id"] for d in report["destroyed"]] == [str(free)]
    assert report["held"] == [str(held)]
    (saved,) = folder.iterdir()
    assert run_cli(capsys, "verify-certificate", str(saved))[0] == 0

    ledger = store.open()
    try:
        assert ledger.get(free).is_erased and not ledger.get(held).is_erased
        assert personal(ledger, held)["given_name"] == "Testa"  # readable: nothing destroyed
        kinds = [entry.event_type for entry in ledger.history(held)]
        assert kinds.count("LegalHoldPlaced") == 1
        placed = next(e for e in ledger.history(held) if e.event_type == "LegalHoldPlaced")
        assert (placed.actor, placed.reason) == (ACTOR, "case-2026-17")
        with pytest.raises(CustomerOnHold):
            ledger.erase(held, actor=ACTOR, legal_basis="x", reason="y")
    finally:
        ledger.close()

    assert run_cli(capsys, "hold", "release", str(held), "--reason", "case-closed")[0] == 0
    assert run_cli(capsys, "hold", "release", str(held))[0] == 3  # not held any more
    code, _, out = run_cli(capsys, "retention", "apply", "--now", FAR, "--json")
    assert [d["customer_id"] for d in json.loads(out)["destroyed"]] == [str(held)]
    assert run_cli(capsys, "verify")[0] == 0


def test_the_api_refuses_to_erase_a_held_customer(store: StoreHandle) -> None:
    api = start_api(store)
    try:
        created = api.client("crm", "service").create_customer(customer())
        customer_id = UUID(created.name.rsplit("/", 1)[-1])
        holds.place_hold(api.ledger, customer_id, actor=ACTOR, reason="case-9")
        dpo = api.client("dpo", "compliance")
        details = fails(
            lambda: dpo.erase_customer(created.name, legal_basis="GDPR Art. 17", reason="req"),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert details["reason"] == "LEGAL_HOLD"
        assert details["metadata"]["customer"] == created.name
        details = fails(
            lambda: dpo.compliance.EraseCustomer(
                compliance_service_pb2.EraseCustomerRequest(
                    name=created.name, legal_basis="GDPR Art. 17", reason="req",
                    categories=["user.contact"],
                ),
                **dpo.call_options,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )  # fmt: skip
        assert details["reason"] == "LEGAL_HOLD"
        holds.release_hold(api.ledger, customer_id, actor=ACTOR)
        answer = dpo.erase_customer(created.name, legal_basis="GDPR Art. 17", reason="req")
        assert answer.certificate.customer == created.name
    finally:
        api.close()


# The plan --------------------------------------------------------------------------------------


def test_the_plan_lists_exactly_what_is_due_by_rule_and_date(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy_file = tmp_path / "short.toml"
    policy_file.write_text(SHORT_POLICY, encoding="utf-8")
    assert run_cli(capsys, "init")[0] == 0
    assert run_cli(capsys, "policy", "apply", str(policy_file))[0] == 0
    ledger = store.open()
    try:
        plain, ended = register(ledger), register(ledger, given_name="Ende")
        holds.end_contract(ledger, ended, date(2026, 11, 1), actor=ACTOR)
        registered = {c: ledger.history(c)[0].timestamp for c in (plain, ended)}
        erased = register(ledger, given_name="Weg")
        ledger.erase(erased, actor=ACTOR, legal_basis="GDPR Art. 17", reason="request")
        before = ledger.recorder.max_notification_id()
    finally:
        ledger.close()

    def plan_at(day: datetime) -> dict[str, Any]:
        code, _, out = run_cli(capsys, "retention", "plan", "--json", "--now", day.isoformat())
        assert code == 0
        return {c["customer_id"]: c for c in json.loads(out)["customers"]}

    first = min(registered.values())
    early = plan_at(first + timedelta(days=29))  # contact details not due yet: 29 < 30 days
    assert list(early) == [str(ended)]
    assert [c["category"] for c in early[str(ended)]["categories"]] == [
        "user.demographic.date_of_birth"
    ]
    # Contact details: 30 days after registration; date of birth: 10 days after 2026-11-01,
    # only for the customer whose contract ended; names: not yet (100 days).
    due = plan_at(max(registered.values()) + timedelta(days=30))
    assert set(due) == {str(plain), str(ended)}
    contact = ["user.contact.email", "user.contact.phone_number", "user.contact.address"]
    assert [c["category"] for c in due[str(plain)]["categories"]] == contact
    assert [c["category"] for c in due[str(ended)]["categories"]] == [
        *contact,
        "user.demographic.date_of_birth",
    ]
    email = due[str(plain)]["categories"][0]
    assert email["rule"] == {
        "category": "user.contact", "keep_for_days": 30, "after": "registration", "why": "",
    }  # fmt: skip
    assert email["trigger_date"] == registered[plain].isoformat()
    assert email["due_date"] == (registered[plain] + timedelta(days=30)).isoformat()
    birth = due[str(ended)]["categories"][-1]
    assert birth["trigger_date"] == "2026-11-01T00:00:00+00:00"
    assert birth["due_date"] == "2026-11-11T00:00:00+00:00"
    assert not due[str(plain)]["whole_customer"]
    # 100 days: names too; the contract-ended customer has every personal category due
    # except its external ids (no rule covers user.unique_id here): still not whole.
    later = plan_at(max(registered.values()) + timedelta(days=100))
    assert "user.name.first" in [c["category"] for c in later[str(plain)]["categories"]]
    assert str(erased) not in later
    _, _, text = run_cli(capsys, "retention", "plan", "--now", "2030-01-01")
    assert str(plain) in text and "30d after registration" in text
    ledger = store.open()
    try:
        assert ledger.recorder.max_notification_id() == before  # the plan wrote nothing
    finally:
        ledger.close()


def test_rule_triggers_and_the_whole_customer_decision() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    facts = CustomerFacts(UUID(int=1), registered_at=t0, last_change_at=t0 + timedelta(days=5))
    policy = default_policy()
    assert retention.due_for(facts, policy, t0 + timedelta(days=734)) is None
    due = retention.due_for(facts, policy, t0 + timedelta(days=735))
    assert due is not None and not due.whole_customer
    assert all(item.trigger_date == t0 + timedelta(days=5) for item in due.categories)
    everything = retention.due_for(facts, policy, t0 + timedelta(days=3655))
    assert everything is not None and everything.whole_customer
    facts.last_activity_at = t0 + timedelta(days=400)  # activity wins over the last change
    due = retention.due_for(facts, policy, t0 + timedelta(days=735))
    assert due is None
    facts.destroyed = {"user.contact.email"}
    due = retention.due_for(facts, policy, t0 + timedelta(days=1200))
    assert due is not None and "user.contact.email" not in [c.category for c in due.categories]


# Apply: resumable, idempotent ----------------------------------------------------------------


class Crash(Exception):
    pass


def test_apply_resumes_after_a_crash_and_never_destroys_twice(store: StoreHandle) -> None:
    ledger = store.open()
    try:
        ids = [register(ledger, given_name=f"N{n}") for n in range(3)]
        now = datetime(2100, 1, 1, tzinfo=UTC)
        seen: list[UUID] = []

        def crash_after_first(destruction: retention.Destruction) -> None:
            seen.append(destruction.customer_id)
            raise Crash  # the process dies right after the first destruction is recorded

        with pytest.raises(Crash):
            retention.apply(ledger, actor=ACTOR, now=now, on_destroyed=crash_after_first)
        assert len(seen) == 1
        rest = retention.apply(ledger, actor=ACTOR, now=now)
        assert sorted(d.customer_id for d in rest.destroyed) == sorted(set(ids) - set(seen))
        again = retention.apply(ledger, actor=ACTOR, now=now)
        assert again.destroyed == [] and again.held == [] and again.failed == {}
        assert [erased_events(ledger, c) for c in ids] == [1, 1, 1]
        public_key = ledger.signer.public_key_pem()
        for destruction in rest.destroyed:
            certificate = SignedCertificate.from_json(destruction.certificate.to_json())
            assert certificate.verify(public_key)
            assert certificate.certificate.reason == retention.RETENTION_REASON
            assert "storage limitation" in certificate.certificate.legal_basis
    finally:
        ledger.close()


def test_partial_dues_wait_for_per_category_destruction(store: StoreHandle) -> None:
    ledger = store.open()
    try:
        customer_id = register(ledger)
        before = ledger.recorder.max_notification_id()
        report = retention.apply(
            ledger, actor=ACTOR, now=datetime(2031, 1, 1, tzinfo=UTC), destroyer=None
        )
        assert report.pending == [customer_id] and report.destroyed == []
        assert ledger.recorder.max_notification_id() == before
        assert personal(ledger, customer_id)["emails"] == ["testa.person@example.org"]
    finally:
        ledger.close()


def test_the_schedule_runs_retention(store: StoreHandle) -> None:
    ledger = store.open()
    try:
        customer_id = register(ledger)
        schedule = RetentionSchedule(ledger, 0.05, clock=lambda: datetime(2100, 1, 1, tzinfo=UTC))
        schedule.start()
        try:
            for _ in range(200):
                if schedule.runs:
                    break
                schedule._stop.wait(0.05)
        finally:
            schedule.stop()
        assert schedule.runs >= 1 and schedule.destroyed == 1
        assert ledger.get(customer_id).is_erased
        erased = next(e for e in ledger.history(customer_id) if e.event_type == "Erased")
        assert erased.actor == "retention-scheduler"
    finally:
        ledger.close()


def test_the_schedule_setting() -> None:
    assert Settings.from_env({}).retention_schedule_seconds == 0
    assert Settings.from_env({"LEDGER_RETENTION_SCHEDULE": "daily"}).retention_schedule_seconds
    assert (
        Settings.from_env({"LEDGER_RETENTION_SCHEDULE": "3600"}).retention_schedule_seconds == 3600
    )
    for bad in ("weekly", "5", "nan"):
        with pytest.raises(ConfigError, match="LEDGER_RETENTION_SCHEDULE"):
            Settings.from_env({"LEDGER_RETENTION_SCHEDULE": bad})


# Handover --------------------------------------------------------------------------------------


def test_handover_moves_every_customer_and_the_leaver_is_refused(store: StoreHandle) -> None:
    api = start_api(store)
    try:
        alice = api.client("alice", "sales")
        mine = [alice.create_customer(customer(given_name=f"A{n}")) for n in range(3)]
        other = api.client("carol", "sales").create_customer(customer(given_name="C"))
        erased = alice.create_customer(customer(given_name="E"))
        api.client("dpo", "compliance").erase_customer(
            erased.name, legal_basis="GDPR Art. 17", reason="request"
        )
        bob = api.client("bob", "sales")
        fails(lambda: bob.get_customer(mine[0].name), grpc.StatusCode.PERMISSION_DENIED)
        admin = api.client("admin-1", "admin")
        fails(
            lambda: admin.handover_customers("alice", "alice", reason="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        fails(
            lambda: bob.handover_customers("alice", "bob", reason="x"),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        answer = admin.handover_customers("alice", "bob", reason="staff-departure")
        assert sorted(answer.customers) == sorted(c.name for c in mine)
        fails(lambda: alice.get_customer(mine[0].name), grpc.StatusCode.UNAUTHENTICATED)
        for moved in mine:
            shown = bob.get_customer(moved.name)
            assert shown.owner == "bob" and shown.given_name.startswith("A")
        assert api.client("carol2", "admin").get_customer(other.name).owner == "carol"
        customer_id = UUID(mine[0].name.rsplit("/", 1)[-1])
        change = api.ledger.history(customer_id)[-1]
        assert change.event_type == "OwnerAssigned"
        assert (change.actor, change.reason) == ("admin-1", "staff-departure")
        (record,) = api.ledger.recorder.select_notifications(
            start=1, limit=10, topics=[PERFORMED_TOPIC]
        )
        event: Any = api.ledger.mapper.to_domain_event(record)
        assert (event.from_principal, event.to_principal) == ("alice", "bob")
        assert sorted(event.customer_ids) == sorted(c.name.rsplit("/", 1)[-1] for c in mine)
    finally:
        api.close()


def test_handover_from_the_cli(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = store.open()
    try:
        ids = [register(ledger, owner="leaver.one") for _ in range(2)]
        kept = register(ledger, owner="stays")
    finally:
        ledger.close()
    code, err, _ = run_cli(capsys, "handover", "leaver.one", "successor", "--reason", "")
    assert code == EXIT_INVALID and "reason" in err
    code, _, out = run_cli(
        capsys, "handover", "leaver.one", "successor", "--reason", "left", "--json"
    )
    assert code == 0 and sorted(json.loads(out)["customers"]) == sorted(map(str, ids))
    code, _, out = run_cli(
        capsys, "handover", "leaver.one", "successor", "--reason", "left", "--json"
    )
    assert code == 0 and json.loads(out)["customers"] == []  # re-running is harmless
    ledger = store.open()
    try:
        assert [ledger.get(c).owner for c in ids] == ["successor", "successor"]
        assert ledger.get(kept).owner == "stays"
    finally:
        ledger.close()
    assert run_cli(capsys, "verify")[0] == 0


# Bulk reads ------------------------------------------------------------------------------------


def test_one_cli_command_reading_past_the_rate_raises_an_alert(
    store: StoreHandle,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ledger.audit.read_alerts import alerts

    monkeypatch.setenv("LEDGER_READ_ALERT_RATE", "2")
    ledger = store.open()
    try:
        for n in range(3):
            register(ledger, given_name=f"Bulk{n}")
    finally:
        ledger.close()
    assert run_cli(capsys, "list", "--page-size", "2")[0] == 0  # two: at the rate, no alert
    with caplog.at_level("WARNING", logger="ledger.audit"):
        code, _, out = run_cli(capsys, "list", "--json")
    assert code == 0 and "Bulk2" in out
    (line,) = [r.getMessage() for r in caplog.records if "read-rate alert" in r.getMessage()]
    assert ACTOR in line and "Bulk" not in line and "example.org" not in line
    ledger = store.open()
    try:
        (alert,) = list(alerts(ledger))
        assert (alert.principal, alert.distinct_customers, alert.threshold) == (ACTOR, 3, 2)
    finally:
        ledger.close()


# Per-category destruction (the category-keys service) ------------------------------------------


def test_apply_destroys_due_categories_and_keeps_the_rest(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = store.open()
    try:
        due, held = register(ledger), register(ledger, given_name="Held")
        holds.place_hold(ledger, held, actor=ACTOR, reason="case-3")
    finally:
        ledger.close()
    # Two years and more after the last change, under the default policy: contact details
    # and the date of birth are due, the name (ten years) is kept.
    code, err, out = run_cli(capsys, "retention", "apply", "--now", "2031-01-01", "--json")
    assert code == 0, err
    report = json.loads(out)
    (destroyed,) = report["destroyed"]
    assert destroyed["customer_id"] == str(due) and not destroyed["whole_customer"]
    assert destroyed["categories"] == [
        "user.contact.email",
        "user.contact.phone_number",
        "user.contact.address",
        "user.demographic.date_of_birth",
    ]
    assert report["held"] == [str(held)]
    code, _, out = run_cli(capsys, "retention", "apply", "--now", "2031-01-01", "--json")
    assert json.loads(out)["destroyed"] == []  # never twice
    code, _, out = run_cli(capsys, "retention", "plan", "--now", "2031-01-01", "--json")
    assert [c["customer_id"] for c in json.loads(out)["customers"]] == [str(held)]
    ledger = store.open()
    try:
        kept = personal(ledger, due)
        assert kept["given_name"] == "Testa" and kept["family_name"] == "Person"
        assert all(isinstance(kept[f], ErasedValue) for f in ("emails", "phones", "birth_date"))
        assert personal(ledger, held)["emails"] == ["testa.person@example.org"]
        kinds = [entry.event_type for entry in ledger.history(due)]
        assert kinds.count("CategoriesErased") == 1
    finally:
        ledger.close()
    code, _, out = run_cli(capsys, "retention", "apply", "--now", "2040-01-01", "--json")
    # Ten years on, the name is due as well: what is left of the customer is erased whole.
    (whole,) = json.loads(out)["destroyed"]
    assert whole["customer_id"] == str(due) and whole["whole_customer"]
    assert run_cli(capsys, "verify")[0] == 0


def test_contract_end_is_recorded_and_checked(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = store.open()
    try:
        customer_id = register(ledger)
    finally:
        ledger.close()
    code, err, _ = run_cli(capsys, "contract", "end", str(customer_id), "--on", "31.12.2026")
    assert code == EXIT_INVALID and "--on" in err
    code, _, out = run_cli(
        capsys, "contract", "end", str(customer_id), "--on", "2026-12-31", "--json"
    )
    assert code == 0 and json.loads(out)["contract_ended_on"] == "2026-12-31"
    ledger = store.open()
    try:
        (ended,) = [e for e in ledger.history(customer_id) if e.event_type == "ContractEnded"]
        assert (ended.details["ended_on"], ended.actor) == ("2026-12-31", ACTOR)
    finally:
        ledger.close()


def test_a_policy_version_refuses_unstorable_actor_text(store: StoreHandle) -> None:
    from ledger.domain.errors import ValidationFailed

    ledger = store.open()
    try:
        with pytest.raises(ValidationFailed, match="actor"):
            PolicyLog(ledger).apply(default_policy(), actor="ops\x1b[2J")
        assert PolicyLog(ledger).versions() == []
    finally:
        ledger.close()
