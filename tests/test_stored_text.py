"""Text a command stores cannot carry control characters or bidirectional overrides, and
text shown on a terminal never acts on it — including text stored before that rule.

The review's case: one register call whose reason holds a newline and ANSI escapes drew a
fake "Erased by dpo" entry under `ledger history` and hid the real text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from ledger.application import CustomerLedger
from ledger.cli.main import main as cli
from ledger.domain.customer import Customer
from ledger.domain.errors import ValidationFailed
from ledger.domain.profile import validate_registration
from tests.helpers import StoreHandle, person

# A newline and a fake entry, then "erase line" + "cursor up" to hide the real text.
FORGED = "ok\nv2  2026-01-01T00:00:00+00:00  Erased          by dpo\x1b[2K\x1b[1A"
BAD_TEXT = [
    pytest.param(FORGED, id="newline-and-ansi"),
    pytest.param("subject\x1b[8mhidden", id="escape"),
    pytest.param("request\u202eevil", id="bidi-override"),
    pytest.param("a\rb", id="carriage-return"),
    pytest.param("tab\there", id="tab"),
    pytest.param("csi\x9b2J", id="c1-csi"),
    pytest.param("nul\x00", id="nul"),
    pytest.param("isolate\u2067x\u2069", id="bidi-isolate"),
]


@pytest.fixture
def ledger(store: StoreHandle) -> Iterator[CustomerLedger]:
    opened = store.open()
    try:
        yield opened
    finally:
        opened.close()


def _position(ledger: CustomerLedger) -> int:
    return int(ledger.recorder.max_notification_id() or 0)


def _refused(call: Any, field: str, value: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        call()
    assert field in [v.field for v in caught.value.violations], caught.value
    assert value not in str(caught.value)
    for piece in value.split():
        if len(piece) > 3:
            assert piece not in str(caught.value)


@pytest.mark.parametrize("bad", BAD_TEXT)
def test_commands_refuse_control_and_bidi_text_and_write_nothing(
    ledger: CustomerLedger, bad: str
) -> None:
    customer_id = ledger.register(person(), actor="clerk")
    before = _position(ledger)
    _refused(lambda: ledger.register(person(), actor="clerk", reason=bad), "reason", bad)
    _refused(lambda: ledger.register(person(), actor=f"clerk{bad}"), "actor", bad)
    for field in ("given_name", "family_name"):
        _refused(lambda f=field: ledger.register(person(**{f: bad}), actor="c"), field, bad)
    address = {**person()["addresses"][0], "address_line1": f"Main St{bad}"}
    _refused(
        lambda: ledger.register(person(addresses=[address]), actor="c"),
        "addresses[0].address_line1",
        bad,
    )
    _refused(
        lambda: ledger.register(person(external_ids={"CRM": f"C-{bad}"}), actor="c"),
        "external_ids.CRM",
        bad,
    )
    _refused(
        lambda: ledger.change(customer_id, {"given_name": f"Ada{bad}"}, actor="c"),
        "given_name",
        bad,
    )
    _refused(
        lambda: ledger.change(customer_id, {"tags": ["vip"]}, actor="c", reason=bad),
        "reason",
        bad,
    )
    _refused(
        lambda: ledger.erase(customer_id, actor="dpo", legal_basis=f"GDPR Art. 17{bad}"),
        "legal_basis",
        bad,
    )
    _refused(
        lambda: ledger.erase(customer_id, actor="dpo", legal_basis="GDPR", reason=bad),
        "reason",
        bad,
    )
    _refused(
        lambda: ledger.read(customer_id, principal="auditor", purpose=f"audit{bad}"),
        "purpose",
        bad,
    )
    _refused(
        lambda: ledger.read(customer_id, principal=f"aud{bad}", purpose="audit"),
        "principal",
        bad,
    )
    assert _position(ledger) == before  # nothing written
    assert ledger.get(customer_id).status != "erased"


def test_external_id_error_names_the_field_as_the_domain_does(ledger: CustomerLedger) -> None:
    """Guards the field name the test above expects for external ids."""
    with pytest.raises(ValidationFailed) as caught:
        ledger.register(person(external_ids={"CRM": "C-\x1b"}), actor="c")
    assert [v.field for v in caught.value.violations] == ["external_ids.CRM"]


def _cli(store: StoreHandle, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    monkeypatch.setenv("LEDGER_ACTOR", "cli-test")
    return cli(list(args))


def test_cli_register_with_escapes_in_reason_is_refused(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _cli(store, monkeypatch, "register", "--given-name", "Ada", "--reason", FORGED)
    captured = capsys.readouterr()
    assert code == 2
    assert "reason" in captured.err
    assert "\x1b" not in captured.err and "Erased" not in captured.err
    assert captured.out == ""


def _stored_before_the_rule(ledger: CustomerLedger) -> UUID:
    """A registration written around the rule (the aggregate saved directly), as old data
    or another writer may have left it."""
    customer_id = uuid4()
    profile = validate_registration({"given_name": "Ada", "family_name": "Lovelace"})
    profile["family_name"] = "Love\u202elace\x1b[31m"
    ledger.keys.create_many([customer_id])
    ledger.save(Customer.register(customer_id, profile, "clerk\x1b[8m", FORGED))
    return customer_id


def test_history_shows_old_stored_escapes_spelled_out(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with store.open() as ledger:
        customer_id = _stored_before_the_rule(ledger)
    for command in ("history", "show"):
        assert _cli(store, monkeypatch, command, str(customer_id)) == 0
        out = capsys.readouterr().out
        for raw in ("\x1b", "\u202e", "\r"):
            assert raw not in out, (command, out)
        assert "\\u202e" in out and "\\x1b[31m" in out
        if command == "history":
            lines = out.strip().splitlines()
            assert [line[:2] for line in lines if not line.startswith(" ")] == ["v1"]  # no v2
            assert "(ok\\x0av2" in out  # the reason, on the entry's own line
            assert "by clerk\\x1b[8m" in out
    # JSON output is JSON: the stored text comes back exactly, escaped by JSON itself.
    assert _cli(store, monkeypatch, "history", str(customer_id), "--json") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\u001b" in out
