"""`ledger demo`: the product's story end to end, through its real interface.

It starts the gRPC server in-process on a free loopback port, issues bearer tokens for a
service, a salesperson, an auditor and a compliance officer, and drives every step through
`ledger.client` — so what it shows is what a caller of the API gets, authorisation and
masking included. Afterwards it verifies the tamper-evident log and searches the raw store
files for the customers' names and emails.

The story is the list `STEPS`: each step is a heading and a function of the shared `Story`,
so adding one (for instance a method that lands later) is a few lines. Only the fictional
sample below ever appears in the output.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc

from ledger.api.server import ApiServer, build_server
from ledger.api.tokens import issue_token
from ledger.audit import client_check
from ledger.audit.storage import AuditStore
from ledger.audit.verifier import verify
from ledger.bootstrap import open_ledger
from ledger.client import LedgerClient, error_details, inclusion_document, tree_head_document
from ledger.config import Settings
from ledger.crypto_shred.certificate import SignedCertificate
from ledger.signing import LedgerSigner
from ledger.v1 import audit_service_pb2, customer_service_pb2, resources_pb2

PDS = resources_pb2.PersonalDataState

PEOPLE: list[dict[str, Any]] = [
    {
        "given_name": "Ada",
        "family_name": "Lovelace",
        "emails": ["ada@example.org"],
        "phones": ["+44 20 7946 0018"],
        "birth_date": {"year": 1985, "month": 12, "day": 10},
        "addresses": [
            {
                "street_number": "12",
                "address_line1": "St James's Square",
                "locality": "London",
                "postcode": "SW1Y 4JH",
                "country": "GB",
            }
        ],
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
    {  # Grace entered a second time by another system: the duplicate merged below.
        "given_name": "Grace B.",
        "family_name": "Hopper",
        "emails": ["g.hopper@example.com"],
        "addresses": [{"locality": "Arlington", "country": "US"}],
        "owner": "sales.amer",
        "tags": ["conference"],
    },
]
KEYS = ("ada", "grace", "zhang", "emile", "grace_again")
PRINCIPALS = {
    "service": ("crm-sync", "service"),
    "sales": ("sales.emea", "sales"),
    "auditor": ("auditor.eve", "auditor"),
    "compliance": ("dpo", "compliance"),
}


@dataclass
class Story:
    """What the steps share: one client per principal, and what earlier steps made."""

    settings: Settings
    server: ApiServer
    clients: dict[str, LedgerClient]
    people: list[dict[str, Any]]
    customers: dict[str, resources_pb2.Customer] = field(default_factory=dict)
    request_ids: dict[str, str] = field(default_factory=dict)
    certificate_valid: bool = False

    def name(self, key: str) -> str:
        return self.customers[key].name

    @property
    def service(self) -> LedgerClient:
        return self.clients["service"]

    @property
    def sales(self) -> LedgerClient:
        return self.clients["sales"]

    @property
    def auditor(self) -> LedgerClient:
        return self.clients["auditor"]

    @property
    def compliance(self) -> LedgerClient:
        return self.clients["compliance"]


# Output ---------------------------------------------------------------------------------


def _heading(text: str) -> None:
    print(f"\n== {text}")


def _list(values: Iterable[object]) -> str:
    shown = ", ".join(str(v) for v in values)
    return shown or "-"


def _state(customer: resources_pb2.Customer) -> str:
    state = resources_pb2.Customer.State.Name(customer.state).lower()
    personal = PDS.Name(customer.personal_data_state).removeprefix("PERSONAL_DATA_STATE_")
    return f"{state}, personal data {personal.lower()}"


def _full_name(customer: resources_pb2.Customer) -> str:
    """Family name first, unspaced, for names written in Han characters (张伟), as their
    owners write them; given name first otherwise."""
    given, family = customer.given_name, customer.family_name
    if any("\u4e00" <= ch <= "\u9fff" for ch in family + given):
        return family + given
    return f"{given} {family}".strip()


def _customer(customer: resources_pb2.Customer) -> str:
    lines = [f"  {customer.name}  (etag {customer.etag}, {_state(customer)})"]
    if customer.personal_data_state == PDS.PERSONAL_DATA_STATE_AVAILABLE:
        lines.append(f"    name      {_full_name(customer)}")
        lines.append(f"    emails    {_list(customer.emails)}")
        lines.append(f"    phones    {_list(customer.phones)}")
    lines.append(f"    owner     {customer.owner or '-'}   tags {_list(customer.tags)}")
    if customer.merged_into:
        lines.append(f"    merged into {customer.merged_into}")
    return "\n".join(lines)


def _refused(error: grpc.RpcError) -> str:
    code: grpc.StatusCode = error.code()
    details = error_details(error)
    reason = "" if details["reason"] == code.name else f" {details['reason']}"
    extra = ", ".join(f"{k}={v}" for k, v in sorted(details["metadata"].items()))
    return f"  refused: {code.name}{reason}" + (f" ({extra})" if extra else "")


def _expect_refusal(call: Callable[[], object]) -> None:
    try:
        call()
    except grpc.RpcError as error:
        print(_refused(error))
    else:
        raise RuntimeError("the demo expected this call to be refused")


# The steps ----------------------------------------------------------------------------------


def register(story: Story) -> None:
    for key, person in zip(KEYS, story.people, strict=True):
        request_id = str(uuid.uuid4())
        story.request_ids[key] = request_id
        made = story.service.create_customer(
            resources_pb2.Customer(**person), request_id=request_id, reason="demo-onboarding"
        )
        story.customers[key] = made
        print(f"  {made.name}  {made.given_name} {made.family_name}  (owner {made.owner})")


def retry_register(story: Story) -> None:
    again = story.service.create_customer(
        resources_pb2.Customer(**story.people[0]), request_id=story.request_ids["ada"]
    )
    print(f"  same customer as the first attempt: {again.name == story.name('ada')}")
    print(f"  customers listed: {len(list(story.service.list_customers()))}")


def update_with_etag(story: Story) -> None:
    ada = story.customers["ada"]
    changed = story.service.update_customer(
        ada.name,
        resources_pb2.Customer(emails=["ada.lovelace@example.org"], phones=["+44 20 7946 0999"]),
        update_mask=["emails", "phones"],
        etag=ada.etag,
        reason="customer-request",
    )
    changed = story.service.assign_owner(
        ada.name, "sales.uk", etag=changed.etag, reason="territory-change"
    )
    changed = story.service.mark_verified(ada.name, etag=changed.etag, reason="kyc-review")
    story.customers["ada"] = changed
    print(_customer(changed))
    print(f"  a change still carrying etag {ada.etag} (Ada is at {changed.etag}):")
    _expect_refusal(
        lambda: story.service.update_customer(
            ada.name, resources_pb2.Customer(tags=["late"]), etag=ada.etag
        )
    )


def list_customers(story: Story) -> None:
    query = 'country = "US" AND tags:"vip"'
    print(f"  filter {query}:")
    for found in story.service.list_customers(filter=query):
        print(f"    {found.name}  {found.given_name} {found.family_name}")
    print("  order_by update_time desc, 2 per page:")
    for number, page in enumerate(
        story.service.list_customer_pages(order_by="update_time desc", page_size=2), start=1
    ):
        shown = ", ".join(f"{c.given_name} {c.family_name}" for c in page.customers)
        print(f"    page {number}: {shown}")


def sales_sees_its_own(story: Story) -> None:
    principal = PRINCIPALS["sales"][0]
    mine = [f"{c.given_name} {c.family_name}" for c in story.sales.list_customers()]
    print(f"  {principal} lists: {_list(mine)}")
    print(f"  {principal} reads Grace (owned by sales.amer):")
    _expect_refusal(lambda: story.sales.get_customer(story.name("grace")))
    print(f"  {principal} lists sales.amer's customers:")
    _expect_refusal(lambda: list(story.sales.list_customers(filter='owner = "sales.amer"')))


def merge_and_unmerge(story: Story) -> None:
    grace, again = story.customers["grace"], story.customers["grace_again"]
    merged = story.service.merge_customers(
        grace.name,
        again.name,
        etag=grace.etag,
        source_etag=again.etag,
        reason="duplicate",
    )
    print("  merged the second Grace into the first:")
    print(_customer(merged))
    print(_customer(story.service.get_customer(again.name)))
    print(f"  listed now: {len(list(story.service.list_customers()))} customers")
    restored = story.service.unmerge_customer(
        again.name, etag=merged.etag, reason="not-the-same-person"
    )
    back = story.service.get_customer(grace.name)
    print("  unmerged: both are as they were before")
    print(f"    first Grace's emails: {_list(back.emails)}; tags: {_list(back.tags)}")
    print(f"    second Grace: {_state(restored)}")


def auditor_reads_history(story: Story) -> None:
    ada = story.name("ada")
    print(f"  {PRINCIPALS['auditor'][0]} lists Ada's events (metadata only):")
    for event in story.auditor.list_customer_events(ada):
        state = PDS.Name(event.personal_data_state).removeprefix("PERSONAL_DATA_STATE_")
        reason = f" ({event.reason})" if event.reason else ""
        print(
            f"    v{event.stream_version} {event.event_type:<15} by {event.actor}{reason}"
            f"  personal data {state.lower()}"
        )
    first = story.auditor.get_customer_as_of(ada, version=1)
    print(f"  as of version 1: owner {first.owner}, {_state(first)}")
    owners = [
        f"v{c.version} {c.value.string_value}"
        for c in story.auditor.get_field_history(ada, "owner")
    ]
    print(f"  owner history: {_list(owners)}")
    print("  the auditor reads Ada's profile:")
    print(_customer(story.auditor.get_customer(ada)))
    streamed = sum(1 for _ in story.auditor.stream_events(1))
    print(f"  StreamEvents from position 1: {streamed} events")


def find_duplicates(story: Story) -> None:
    print("  before registering 'Zhang Wei' (pinyin, same phone), crm-sync asks for duplicates:")
    candidate = resources_pb2.Customer(
        given_name="Wei", family_name="Zhang", phones=["+86 138 0013 8000"]
    )
    _print_matches(story.service.find_duplicates(candidate))
    print("  and for the customers most like the second Grace:")
    _print_matches(story.service.find_duplicates(customer=story.name("grace_again")))


def _print_matches(matches: list[customer_service_pb2.DuplicateMatch]) -> None:
    if not matches:
        print("    no likely duplicate")
    for match in matches[:3]:
        who = _full_name(match.customer)
        agreeing = [f.field for f in match.field_scores if f.score >= 0.9]
        print(f"    {match.score:.2f}  {match.customer.name} ({who})  agreeing: {_list(agreeing)}")


def access_log(story: Story) -> None:
    ada = story.name("ada")
    records = list(story.auditor.list_access_log(f'customer = "{ada}"'))
    auditor = PRINCIPALS["auditor"][0]
    print(f"  {auditor} asks who received Ada's personal data: {len(records)} records")
    for record in records[-6:]:
        outcome = audit_service_pb2.AccessRecord.Outcome.Name(record.outcome).lower()
        method = record.method.rsplit("/", 1)[-1] or "-"
        fields = f"{len(record.fields)} field(s)" if record.fields else "no personal field"
        print(f"    {record.principal:<12} {method:<18} {outcome:<8} {fields}, {record.purpose}")


MARKETING = "marketing.advertising.first_party"


def consent_and_purpose(story: Story) -> None:
    grace = story.name("grace")
    signer = LedgerSigner.load_or_create(story.settings.resolved_token_key_file)
    token = issue_token(signer, "mailer", ["service"], timedelta(minutes=30))
    target = f"127.0.0.1:{story.server.port}"
    with LedgerClient(target, token=token, purpose=MARKETING) as mailer:

        def read(when: str) -> None:
            seen = mailer.get_customer(grace)
            why: dict[str, list[str]] = {}
            for m in seen.masked_fields:
                reason = m.reason.split(":")[0].replace("purpose_may_not_use", "not its purpose")
                why.setdefault(reason, []).append(m.field)
            masked = "; ".join(f"{', '.join(fields)} ({reason})" for reason, fields in why.items())
            print(f"    {when}: name {seen.given_name or '-'}, emails {_list(seen.emails)}")
            print(f"      masked: {masked}")

        print(f"  mailer (service) reads Grace for {MARKETING}:")
        read("without consent")
        story.service.give_consent(grace, [MARKETING], source="web", form="newsletter-v2")
        read("after her consent (web, form newsletter-v2)")
        story.service.withdraw_consent(grace, MARKETING, source="app")
        read("after she withdrew it, the next call")
    records = [
        r for r in story.auditor.list_access_log(f'customer = "{grace}"') if r.principal == "mailer"
    ]
    print(
        f"  the access log keeps what each of those reads masked, and why ({len(records)} records)"
    )


def tamper_evidence(story: Story) -> None:
    public_key = LedgerSigner.load_or_create(story.settings.resolved_signing_key_file)
    pem = public_key.public_key_pem()
    head = story.auditor.get_tree_head()
    size, root = client_check.verify_tree_head(tree_head_document(head), pem)
    print(f"  signed tree head: {size} events, root {root.hex()[:16]}..., signature verifies")
    ada = story.name("ada")
    first = next(e for e in story.auditor.stream_events(1) if e.customer == ada)
    proof = story.auditor.get_inclusion_proof(first.position, tree_size=size)
    client_check.check_inclusion_document(inclusion_document(proof), pem)
    print(
        f"  Ada's registration (position {first.position}) is in that tree: "
        f"{len(proof.hashes)} hashes, checked with the public key alone"
    )


def erase(story: Story) -> None:
    ada = story.name("ada")
    response = story.compliance.erase_customer(
        ada, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request"
    )
    print(response.certificate_json)
    public_key = LedgerSigner.load_or_create(story.settings.resolved_signing_key_file)
    valid = SignedCertificate.from_json(response.certificate_json).verify(
        public_key.public_key_pem()
    )
    story.certificate_valid = valid
    print(f"  certificate verifies with the ledger's public key: {valid}")
    print(_customer(story.service.get_customer(ada)))
    print("  a new change to Ada:")
    _expect_refusal(
        lambda: story.service.update_customer(ada, resources_pb2.Customer(tags=["again"]))
    )


def export_after_erasure(story: Story) -> None:
    document = story.compliance.export_customer_data(story.name("ada"))
    data = json.loads(document)
    customer = data["customer"]
    history = data.get("history", [])
    print(f"  {len(document):,} bytes; customer.personal_data: {customer['personal_data']}")
    print(f"  history: {len(history)} events ({', '.join(e['event_type'] for e in history)})")
    ada = story.people[0]
    values = [ada["given_name"], ada["family_name"], *ada["emails"], "ada.lovelace@example.org"]
    leaked = [v for v in values if v.encode() in document]
    print(f"  any of Ada's personal values in it: {'YES' if leaked else 'none'}")
    if leaked:
        raise RuntimeError("the export after erasure holds personal data")


def others_intact(story: Story) -> None:
    for key in ("grace", "zhang", "emile"):
        print(_customer(story.service.get_customer(story.name(key))))


def data_policy(story: Story) -> None:
    answer = story.auditor.get_policy()
    applied = "the shipped default" if answer.version == 0 else f"applied by {answer.actor}"
    print(f"  policy {answer.policy_name!r} version {answer.version} ({applied})")
    for purpose in answer.purposes[:3]:
        print(f"    {purpose.key:<36} {purpose.lawful_basis:<18} {_list(purpose.categories)}")
    for rule in answer.retention_rules:
        print(f"    keep {rule.category:<32} {rule.keep_for_days:>5} days after {rule.after}")
    emails = next(c for c in answer.classification if c.field == "emails")
    print(f"  field 'emails' is {emails.category} ({emails.sensitivity})")


def staff_departure(story: Story) -> None:
    signer = LedgerSigner.load_or_create(story.settings.resolved_token_key_file)
    token = issue_token(signer, "admin.ops", ["admin"], timedelta(minutes=5))
    with LedgerClient(f"127.0.0.1:{story.server.port}", token=token, purpose="demo") as admin:
        done = admin.handover_customers("sales.amer", "sales.emea", reason="staff-departure")
    print(
        f"  sales.amer left: {len(done.customers)} customer(s) moved to sales.emea in one "
        "audited operation; sales.amer's credentials are revoked"
    )
    mine = [f"{c.given_name} {c.family_name}" for c in story.sales.list_customers()]
    print(f"  {PRINCIPALS['sales'][0]} lists now: {_list(mine)}")


def destroy_one_category(story: Story) -> None:
    """Retention: contact details go, the name stays (kept for tax law)."""
    grace = story.name("grace")
    response = story.compliance.erase_customer(
        grace,
        legal_basis="GDPR Art. 5(1)(e) storage limitation",
        reason="retention-contact-2y",
        categories=["user.contact"],
    )
    print(f"  destroyed: {', '.join(response.certificate.categories)}")
    shown = story.service.get_customer(grace)
    print(_customer(shown))
    print(f"    erased fields: {_list(shown.erased_fields)}")


Step = tuple[str, Callable[[Story], None]]
STEPS: list[Step] = [
    ("Registering 5 customers (CustomerService.CreateCustomer, as crm-sync)", register),
    ("Retrying Ada's registration with the same request_id creates nothing", retry_register),
    ("Changing Ada with her etag; a stale etag is refused", update_with_etag),
    ("Checking for duplicates (CustomerService.FindDuplicates)", find_duplicates),
    ("Listing customers with a filter, an order and page tokens", list_customers),
    ("A salesperson sees and reads only the customers it owns", sales_sees_its_own),
    ("Merging a duplicate, then undoing the merge", merge_and_unmerge),
    ("An auditor reads history and metadata, never personal data", auditor_reads_history),
    ("Who received Ada's personal data (AuditService.ListAccessLog)", access_log),
    ("Consent and purpose: marketing sees Grace only while she consents", consent_and_purpose),
    ("Proving the log unaltered (GetTreeHead, GetInclusionProof)", tamper_evidence),
    ("Erasing Ada (ComplianceService.EraseCustomer, as dpo)", erase),
    ("Exporting Ada's data after erasure: only non-personal data is left", export_after_erasure),
    ("The others are intact", others_intact),
    ("The data policy in force (ComplianceService.GetPolicy)", data_policy),
    (
        "Retention: destroying Grace's contact details only (EraseCustomer with categories)",
        destroy_one_category,
    ),
    ("Staff departure (ComplianceService.HandoverCustomers, as admin)", staff_departure),
]


# Running it ---------------------------------------------------------------------------------


def _store_files(settings: Settings) -> list[Path]:
    store = settings.store
    if store.kind != "sqlite" or store.sqlite_path is None:
        return []
    folder = settings.resolved_data_dir
    return sorted(p for p in folder.glob("*.db*") if p.is_file())


def _loopback(settings: Settings) -> Settings:
    """The demo's server is plain loopback, whatever TLS the environment configures."""
    api = replace(settings.api, tls_cert_file=None, tls_key_file=None, tls_client_ca_file=None)
    return replace(settings, api=api)


def _clients(settings: Settings, server: ApiServer) -> dict[str, LedgerClient]:
    signer = LedgerSigner.load_or_create(settings.resolved_token_key_file)
    target = f"127.0.0.1:{server.port}"
    return {
        role: LedgerClient(
            target,
            token=issue_token(signer, principal, [granted], timedelta(minutes=30)),
            purpose="demo",
        )
        for role, (principal, granted) in PRINCIPALS.items()
    }


def run_story(settings: Settings, steps: list[Step], people: list[dict[str, Any]]) -> Story:
    with open_ledger(settings) as ledger:
        server = build_server(ledger, settings, listen="127.0.0.1:0")
        clients = _clients(settings, server)
        story = Story(settings, server, clients, people)
        print(f"ledger demo: gRPC server on 127.0.0.1:{server.port}, store {settings.store_url}")
        print(f"principals: {', '.join(f'{p} ({r})' for p, r in PRINCIPALS.values())}")
        try:
            for heading, step in steps:
                _heading(heading)
                step(story)
        finally:
            for client in clients.values():
                client.close()
            server.stop(grace=5)
    return story


def run_demo(settings: Settings) -> int:
    settings = _loopback(settings)
    # A fresh suffix keeps the demo's searches honest when it runs again on the same store.
    run = secrets.token_hex(3)
    people = [dict(p, external_ids={"DEMO": f"{run}-{i}"}) for i, p in enumerate(PEOPLE)]
    story = run_story(settings, STEPS, people)

    _heading("The log is tamper-evident (Merkle tree, signed tree heads)")
    public_key = LedgerSigner.load_or_create(settings.resolved_signing_key_file).public_key_pem()
    with AuditStore.open(settings) as store:
        report = verify(store, public_key)
    print(
        f"  ledger verify: {report.events} events checked against {report.tree_heads} signed "
        f"tree head(s): {'OK' if report.ok else 'FAILED'}"
    )

    files = _store_files(settings)
    found: list[str] = []
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
    if found or not report.ok or not story.certificate_valid:
        return 1
    print("\ndemo finished")
    return 0
