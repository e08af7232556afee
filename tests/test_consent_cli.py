"""Consent and purpose-bound reads through the CLI, and consent columns in `ledger import`,
on both stores: `main()` in-process, the access log read back from the store."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from ledger.api.authz import ROLES
from ledger.api.tokens import TokenVerifier
from ledger.cli.main import main
from ledger.consent.service import ConsentService
from ledger.domain.errors import ValidationFailed
from ledger.importer import CsvImporter, parse_mapping
from ledger.policy.model import DEFAULT_POLICY_FILE
from ledger.signing import LedgerSigner
from tests.helpers import StoreHandle, person

MARKETING = "marketing.advertising.first_party"


@pytest.fixture
def cli(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    for name in [k for k in os.environ if k.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))

    def run(*args: str, code: int = 0) -> Any:
        capsys.readouterr()
        assert main([*args, "--actor", "clerk", "--json"]) == code
        out, err = capsys.readouterr()
        return json.loads(out) if code == 0 else err

    return run


def register(store: StoreHandle) -> str:
    with store.open() as ledger:
        return str(ledger.register(person(), actor="clerk"))


def test_cli_show_is_masked_until_consent_and_again_after_withdrawal(
    store: StoreHandle, cli: Any
) -> None:
    ada = register(store)
    before = cli("show", ada, "--purpose", MARKETING)
    assert before["given_name"] is None and before["emails"] is None
    assert before["masked_fields"]["emails"] == "no_consent"
    assert before["masked_fields"]["addresses"] == "purpose_may_not_use:user.contact.address"

    given = cli("consent", "give", ada, "--purpose", MARKETING, "--source", "web",
                "--form", "signup-v3", "--proof", "ticket:7")  # fmt: skip
    assert given["recorded"][0]["separate"] and given["recorded"][0]["form"] == "signup-v3"
    during = cli("show", ada, "--purpose", MARKETING)
    assert during["given_name"] == "Testa" and during["emails"] == ["testa.person@example.org"]
    assert during["birth_date"] is None and "emails" not in during["masked_fields"]

    assert cli("consent", "withdraw", ada, "--purpose", MARKETING, "--source", "app")["withdrawn"]
    after = cli("show", ada, "--purpose", MARKETING)
    assert after["emails"] is None and after["masked_fields"]["emails"] == "consent_withdrawn"
    listed = cli("consent", "list", ada)
    assert listed["in_force"] == []
    assert [(e["purpose"], e["state"]) for e in listed["history"]] == [
        (MARKETING, "given"),
        (MARKETING, "withdrawn"),
    ]

    log = cli("access-log", "--customer", ada)
    shows = [e for e in log if e["method"] == "cli:show"]
    assert shows[0]["fields"] == []
    assert {m["field"]: m["reason"] for m in shows[0]["masked"]}["given_name"] == "no_consent"
    assert "emails" in shows[1]["fields"] and "birth_date" not in shows[1]["fields"]
    assert {m["reason"] for m in shows[2]["masked"]} >= {"consent_withdrawn"}

    # list and lookup are masked the same way; the default purpose is not.
    listed_page = cli("list", "--purpose", MARKETING)
    assert listed_page["customers"][0]["given_name"] is None
    assert listed_page["customers"][0]["masked_fields"]["given_name"] == "consent_withdrawn"
    found = cli("lookup", "--email", "testa.person@example.org")
    assert found["customers"][0]["given_name"] == "Testa"
    assert found["customers"][0]["masked_fields"] == {}


def test_cli_refuses_bad_consent_input_naming_the_field_and_writes_nothing(
    store: StoreHandle, cli: Any
) -> None:
    ada = register(store)
    err = cli("consent", "give", ada, "--purpose", "marketing.nope", "--source", "web",
              code=2)  # fmt: skip
    assert "purpose: not a purpose of the data policy" in err
    err = cli("consent", "give", ada, "--purpose", "essential.service", "--source", "web",
              code=2)  # fmt: skip
    assert "purpose: rests on contract, not on consent" in err
    err = cli("consent", "give", ada, "--purpose", MARKETING, "--purpose",
              "third_party_sharing", "--source", "web", code=2)  # fmt: skip
    assert "purpose[1]: needs a separate consent" in err
    err = cli("consent", "give", ada, "--purpose", MARKETING, "--source", "Ada's phone",
              code=2)  # fmt: skip
    assert "source: must be a code" in err and "Ada" not in err
    err = cli("show", ada, "--purpose", "marketing.advertising.third_party", code=2)
    assert "purpose: not a purpose of the data policy" in err
    with store.open() as ledger:
        assert ledger.get(UUID(ada)).version == 1
        assert not [e for e in ledger.access_log.entries() if e.method == "cli:show"]


def test_cli_export_lists_consents_bases_retention_and_recipients(
    store: StoreHandle, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ada = register(store)
    cli("consent", "give", ada, "--purpose", MARKETING, "--source", "web")
    cli("show", ada, "--purpose", MARKETING)
    document = cli("export", ada)
    assert document["consents"]["in_force"] == [MARKETING]
    assert {p["key"]: p["lawful_basis"] for p in document["purposes"]}[MARKETING] == "consent"
    assert {r["field"]: r["due"] is not None for r in document["retention"]}["emails"]
    (recipient,) = document["recipients"]
    assert (recipient["principal"], recipient["purpose"]) == ("clerk", MARKETING)
    assert recipient["fields"] == ["emails", "family_name", "given_name", "phones"]
    capsys.readouterr()
    assert main(["export", ada]) == 0
    text = capsys.readouterr().out
    assert "Purposes and lawful bases:" in text and "Retention:" in text
    assert f"purpose {MARKETING}" in text


CSV = """first,last,mail,optin,abroad
Anna,Alpha,anna@example.org,yes,no
Bert,Beta,bert@example.org,,1
Cara,Gamma,cara@example.org,perhaps,
"""


def test_import_records_consent_columns_with_the_registration(
    store: StoreHandle, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(CSV, encoding="utf-8")
    abroad = "abroad=consent:third_party_sharing.cross_border_transfer"
    mapping = parse_mapping(
        [
            "first=given_name",
            "last=family_name",
            "mail=emails",
            f"optin=consent:{MARKETING}",
            abroad,
        ]
    )
    with store.open() as ledger:
        summary = CsvImporter(ledger, mapping, actor="importer", duplicate_policy="off").run(path)
        assert summary.imported == 3 and summary.with_warnings == 1
        (problem,) = summary.problems
        assert (problem.line, problem.violations[0].field) == (4, f"consent:{MARKETING}")
        ids = dict(summary.registered)
        consents = ConsentService(ledger)
        anna, bert, cara = (consents.history(ids[line]) for line in (2, 3, 4))
        assert [(e.purpose, e.channel, e.separate) for e in anna] == [(MARKETING, "import", True)]
        assert [e.purpose for e in bert] == ["third_party_sharing.cross_border_transfer"]
        assert cara == []
        # Registered, then the consent: in the same save (consecutive versions, one commit).
        assert [e.event_type for e in ledger.history(ids[2])] == ["Registered", "ConsentGiven"]


def test_import_refuses_a_consent_column_outside_the_policy_and_writes_nothing(
    store: StoreHandle, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(CSV, encoding="utf-8")
    with store.open() as ledger:
        for target, reason in (
            ("consent:marketing.nope", "consent:marketing.nope: not a purpose of the data policy"),
            ("consent:essential.service", "consent:essential.service: rests on contract"),
        ):
            mapping = parse_mapping(["first=given_name", "last=family_name", f"optin={target}"])
            with pytest.raises(ValidationFailed) as refused:
                CsvImporter(ledger, mapping, actor="importer").run(path)
            assert [v.field for v in refused.value.violations] == ["--map"]
            assert reason in str(refused.value)
        assert ledger.recorder.max_notification_id() in (None, 0)


def test_cli_history_and_field_history_are_masked_by_purpose(store: StoreHandle, cli: Any) -> None:
    ada = register(store)
    history = cli("history", ada, "--purpose", MARKETING)
    assert history[0]["event_type"] == "Registered" and history[0]["personal"] == {}
    changes = cli("field-history", ada, "emails", "--purpose", MARKETING)
    assert changes[0]["value"] is None and changes[0]["masked"] == {"emails": "no_consent"}
    cli("consent", "give", ada, "--purpose", MARKETING, "--source", "web")
    history = cli("history", ada, "--purpose", MARKETING)
    assert set(history[0]["personal"]) == {"given_name", "family_name", "emails", "phones"}
    assert history[-1]["event_type"] == "ConsentGiven" and history[-1]["channel"] == "web"
    changes = cli("field-history", ada, "emails", "--purpose", MARKETING)
    assert changes[0]["value"] == ["testa.person@example.org"] and "masked" not in changes[0]
    assert cli("as-of", ada, "--version", "1", "--purpose", MARKETING)["birth_date"] is None


def test_token_issue_names_the_purposes_a_principal_may_act_for(
    store: StoreHandle, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with store.open():
        pass  # the ledger (and its token key) exist
    signer = LedgerSigner.load_or_create(store.settings.resolved_token_key_file)
    verifier = TokenVerifier(signer.public_key_pem(), ROLES)

    def issue(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["token", "issue", "--principal", "mailer", "--role", "service", *args])
        out, err = capsys.readouterr()
        return code, (out.strip() if code == 0 else err)

    code, token = issue("--purpose", "marketing", "--purpose", "essential")
    assert code == 0 and verifier.verify(token).purposes == ("essential", "marketing")
    code, token = issue()
    assert code == 0 and verifier.verify(token).purposes is None  # its roles' defaults
    code, err = issue("--purpose", "Marketing for Ada")
    assert code == 2 and "--purpose" in err and "Ada" not in err


def test_a_newly_applied_policy_version_governs_the_next_read_and_consent(
    store: StoreHandle, cli: Any, tmp_path: Path
) -> None:
    ada = register(store)
    cli("consent", "give", ada, "--purpose", MARKETING, "--source", "web")
    assert cli("show", ada, "--purpose", MARKETING)["given_name"] == "Testa"
    text = DEFAULT_POLICY_FILE.read_text(encoding="utf-8").replace(
        'categories = ["user.name", "user.contact.email", "user.contact.phone_number"]\n\n'
        '[[purpose]]\nkey = "analytics.reporting"',
        'categories = ["user.contact.email"]\n\n[[purpose]]\nkey = "analytics.reporting"',
    )
    assert text != DEFAULT_POLICY_FILE.read_text(encoding="utf-8")
    narrower = tmp_path / "policy.toml"
    narrower.write_text(text, encoding="utf-8")
    cli("policy", "apply", str(narrower))
    shown = cli("show", ada, "--purpose", MARKETING)
    assert shown["emails"] == ["testa.person@example.org"] and shown["given_name"] is None
    assert shown["masked_fields"]["given_name"] == "purpose_may_not_use:user.name.first"
    exported = cli("export", ada)
    assert exported["policy"]["version"] == 1
    marketing = next(p for p in exported["purposes"] if p["key"] == MARKETING)
    assert marketing["categories"] == ["user.contact.email"]
