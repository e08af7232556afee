"""`ledger demo`: the product's story end to end on the configured store.

Registers a few customers, changes one, shows its history, erases one and shows that its
history still replays (with erased values) while the others stay intact, and finally looks
at the raw store bytes to show that no personal value is stored in plaintext.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from ledger.audit.storage import AuditStore
from ledger.audit.verifier import verify
from ledger.bootstrap import open_ledger
from ledger.cli.render import customer_text, history_text
from ledger.config import Settings
from ledger.signing import LedgerSigner

PEOPLE: list[dict[str, Any]] = [
    {
        "given_name": "Ada",
        "family_name": "Lovelace",
        "emails": ["ada@example.org"],
        "phones": ["+44 20 7946 0018"],
        "birth_date": "1985-12-10",
        "addresses": [
            {
                "street_number": "12",
                "address_line1": "St James's Square",
                "locality": "London",
                "postcode": "SW1Y 4JH",
                "country": "GB",
            }
        ],
        "external_ids": {"CRM": "A-1001"},
        "locale": "en-GB",
        "owner": "sales.emea",
    },
    {
        "given_name": "Grace",
        "family_name": "Hopper",
        "emails": ["grace@example.com"],
        "phones": ["+1 202 555 0143"],
        "addresses": [{"locality": "Arlington", "country": "US"}],
        "owner": "sales.amer",
        "tags": ["navy", "vip"],
    },
    {
        "given_name": "伟",
        "family_name": "张",
        "emails": ["zhang.wei@example.cn"],
        "phones": ["+86 138 0013 8000"],
        "addresses": [{"locality": "北京", "country": "CN"}],
        "locale": "zh-CN",
        "owner": "sales.apac",
    },
    {
        "given_name": "Émile",
        "family_name": "Durand",
        "emails": ["emile.durand@example.fr"],
        "phones": ["06 12 34 56 78"],
        "addresses": [{"locality": "Lyon", "country": "FR"}],
        "owner": "sales.emea",
    },
]


def _heading(text: str) -> None:
    print(f"\n== {text}")


def _store_files(settings: Settings) -> list[Path]:
    store = settings.store
    if store.kind != "sqlite" or store.sqlite_path is None:
        return []
    folder = settings.resolved_data_dir
    return sorted(p for p in folder.glob("*.db*") if p.is_file())


def run_demo(settings: Settings) -> int:
    actor = "demo"
    # A fresh suffix keeps the demo's searches honest when it runs again on the same store.
    run = secrets.token_hex(3)
    people = [dict(p, external_ids={"DEMO": f"{run}-{i}"}) for i, p in enumerate(PEOPLE)]
    with open_ledger(settings) as ledger:
        _heading(f"Registering {len(people)} customers on {settings.store_url}")
        ids = []
        for person in people:
            customer_id = ledger.register(person, actor=actor, reason="demo-onboarding")
            ids.append(customer_id)
            print(f"  {customer_id}  {person['given_name']} {person['family_name']}")
        ada, grace, zhang, emile = ids

        _heading("Changing Ada's email and phone (one event carrying only what changed)")
        changed = ledger.change(
            ada,
            {"emails": ["ada.lovelace@example.org"], "phones": ["+44 20 7946 0999"]},
            actor=actor,
            expected_version=1,
            reason="customer-request",
        )
        print(f"  changed: {', '.join(changed)}")
        ledger.assign_owner(ada, "sales.uk", actor=actor, reason="territory-change")
        ledger.mark_verified(ada, actor=actor, reason="kyc-review")
        print(customer_text(ledger.read(ada, principal=actor, purpose="demo")))

        _heading("Ada's history")
        print(history_text(ledger.read_history(ada, principal=actor, purpose="demo")))

        _heading("A stale change is refused (expected version 1, Ada is at 4)")
        try:
            ledger.change(ada, {"tags": ["late"]}, actor=actor, expected_version=1)
        except Exception as exc:
            print(f"  refused: {exc}")

        _heading("Erasing Ada (GDPR Art. 17): the key is destroyed, a certificate is signed")
        certificate = ledger.erase(
            ada, actor=actor, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request"
        )
        print(certificate.to_json())
        public_key = LedgerSigner.load_or_create(
            settings.resolved_signing_key_file
        ).public_key_pem()
        print(
            f"  certificate verifies with the ledger's public key: {certificate.verify(public_key)}"
        )

        _heading("Ada after erasure: the history replays, personal data is gone")
        print(customer_text(ledger.read(ada, principal=actor, purpose="demo")))
        print(history_text(ledger.read_history(ada, principal=actor, purpose="demo")))
        try:
            ledger.change(ada, {"tags": ["again"]}, actor=actor)
        except Exception as exc:
            print(f"  new command refused: {exc}")

        _heading("The others are intact")
        for customer_id in (grace, zhang, emile):
            print(customer_text(ledger.read(customer_id, principal=actor, purpose="demo")))
        reads = len(list(ledger.access_log.entries()))

    _heading("The log is tamper-evident (Merkle tree, signed tree heads, access log)")
    with AuditStore.open(settings) as store:
        report = verify(store, public_key)
    print(
        f"  ledger verify: {report.events} events checked against {report.tree_heads} signed "
        f"tree head(s), {reads} recorded reads of personal data: "
        f"{'OK' if report.ok else 'FAILED'}"
    )

    files = _store_files(settings)
    if files:
        _heading("Raw store bytes: is any personal value stored in plaintext?")
        blob = b"".join(p.read_bytes() for p in files)
        needles = [p["family_name"] for p in people] + [e for p in people for e in p["emails"]]
        # Needles shorter than five bytes could match binary page data by chance.
        needles = [n for n in needles if len(n.encode()) >= 5]
        found = [n for n in needles if n.encode() in blob or n.lower().encode() in blob]
        print(
            f"  searched {len(files)} files ({len(blob):,} bytes) for {len(needles)} names "
            f"and emails: {'FOUND ' + str(len(found)) if found else 'none found'}"
        )
        if found:
            return 1
    print("\ndemo finished")
    return 0
