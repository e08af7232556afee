"""The subject-access and portability export (GDPR Art. 15 and 20, CCPA §1798.110,
PIPL Art. 45): everything the ledger holds about one customer, with what the law asks to be
told besides: the consents, every purpose with its lawful basis and whether it applies to
this customer, the data categories held, when each category falls due for destruction, and
who received the data (from the access log: who, when, for which purpose, which fields).

One document, built once, served as JSON (`ledger export --json`, ExportCustomerData's
`document`) and as readable text (`ledger export`, the response's `text`). The format is
documented in docs/subject-access.md. The export is not masked by a read purpose: it is the
customer's own data returned to the customer, which Art. 15 wants whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.application import CustomerLedger
from ledger.audit.access_log import AccessEntry
from ledger.consent.basis import missing_basis
from ledger.consent.records import ConsentEntry, in_force, read_history
from ledger.domain.erased import ErasedValue
from ledger.domain.profile import PERSONAL_FIELDS
from ledger.policy.classification import FIELDS, Sensitivity
from ledger.policy.facts import CustomerFacts, facts_from
from ledger.policy.model import Policy
from ledger.policy.retention import trigger_of
from ledger.policy.source import PolicySource
from ledger.views import CustomerView

EXPORT_FORMAT = "ledger.customer-export.v2"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _held(view: CustomerView, field: str) -> bool | None:
    """Whether the field holds a value (None: erased, nothing readable is held)."""
    if not isinstance(view.personal, dict):
        return None
    value = view.personal.get(field)
    return None if isinstance(value, ErasedValue) else bool(value)


def categories(view: CustomerView) -> list[dict[str, Any]]:
    return [
        {
            "field": entry.field,
            "category": entry.category,
            "sensitivity": entry.sensitivity.value,
            "description": entry.description,
            "personal": entry.sensitivity is not Sensitivity.NONE,
            "held": _held(view, entry.field) if entry.field in PERSONAL_FIELDS else True,
        }
        for entry in FIELDS
    ]


def retention(policy: Policy, facts: CustomerFacts | None) -> list[dict[str, Any]]:
    """When each personal field falls due, by the same rules and trigger dates as
    `ledger retention plan` (`ledger.policy.retention.trigger_of`)."""
    rows = []
    for entry in FIELDS:
        if entry.sensitivity is Sensitivity.NONE:
            continue
        rule = policy.rule_for(entry.category)
        row: dict[str, Any] = {"field": entry.field, "category": entry.category}
        if facts is not None and entry.category in facts.destroyed:
            row |= {"rule": None, "counts_from": None, "due": None,
                    "note": "destroyed under the retention policy"}  # fmt: skip
        elif rule is None:
            row |= {"rule": None, "counts_from": None, "due": None,
                    "note": "kept until the customer is erased"}  # fmt: skip
        else:
            start = trigger_of(facts, rule.after) if facts is not None else None
            row |= {
                "rule": {
                    "category": rule.category,
                    "keep_for_days": rule.keep_for_days,
                    "after": rule.after.value,
                    "why": rule.why,
                },
                "counts_from": _iso(start),
                "due": _iso(start + timedelta(days=rule.keep_for_days)) if start else None,
                "note": "" if start else f"falls due only once {rule.after.value} is recorded",
            }
            if facts is not None and facts.legal_hold:
                row["note"] = "a legal hold keeps it past this date until released"
        rows.append(row)
    return rows


def purposes(policy: Policy, consents: dict[str, ConsentEntry]) -> list[dict[str, Any]]:
    return [
        {
            "key": purpose.key,
            "name": purpose.name,
            "lawful_basis": purpose.lawful_basis.value,
            "separate_consent": purpose.separate_consent,
            "categories": list(purpose.categories),
            "applies": missing_basis(purpose, consents) is None,
            "why_not": missing_basis(purpose, consents),
        }
        for purpose in policy.purposes
    ]


def recipients(customer_id: UUID, entries: Iterable[AccessEntry]) -> list[dict[str, Any]]:
    """Who received this customer's personal data: every recorded read that carried some of
    its fields (fields masked for it, by reason of its consents, are not counted)."""
    wanted = str(customer_id)
    rows = []
    for entry in entries:
        masked_here = {
            m["field"]
            for m in entry.masked
            if "customer_ids" not in m or wanted in m["customer_ids"]
        }
        fields = [f for f in entry.fields if f not in masked_here]
        if not fields:
            continue
        rows.append(
            {
                "principal": entry.principal,
                "at": entry.at.isoformat(),
                "purpose": entry.purpose,
                "method": entry.method,
                "fields": fields,
            }
        )
    return rows


def subject_access_document(
    ledger: CustomerLedger, customer_id: UUID, policy: PolicySource, now: datetime
) -> dict[str, Any]:
    view = ledger.get(customer_id)
    history = ledger.history(customer_id)
    key = ledger.keys.record(customer_id)
    consent_history = read_history(ledger, customer_id)
    current = in_force(consent_history)
    version, current_policy = policy.current()
    return {
        "format": EXPORT_FORMAT,
        "exported_at": now.isoformat(),
        "customer": view.to_json(),
        "history": [entry.to_json() for entry in history],
        "data_key": {
            "key_id": key.key_id,
            "status": key.status.value,
            "created_at": _iso(key.created_at),
            "destroyed_at": _iso(key.destroyed_at),
        },
        "policy": {"name": current_policy.name, "version": version},
        "consents": {
            "in_force": sorted(k for k, entry in current.items() if entry.given),
            "history": [entry.to_json() for entry in consent_history],
        },
        "purposes": purposes(current_policy, current),
        "categories": categories(view),
        "retention": retention(current_policy, facts_from(ledger.events.get(customer_id))),
        "recipients": recipients(customer_id, ledger.access_log.entries(customer_id=customer_id)),
    }


def personal_fields_in(document: dict[str, Any]) -> list[str]:
    """The personal fields the document carries (for its own access record)."""
    fields = {f for f in PERSONAL_FIELDS if document["customer"].get(f)}
    for entry in document["history"]:
        if isinstance(entry.get("personal"), dict):
            fields.update(set(entry["personal"]) & set(PERSONAL_FIELDS))
    return sorted(fields)


def subject_access_text(document: dict[str, Any]) -> str:
    """The same document for a person to read."""
    customer = document["customer"]
    lines = [
        f"Data held about customer {customer['id']} (exported {document['exported_at']})",
        f"policy: {document['policy']['name']} version {document['policy']['version']}",
        "",
        "Profile:",
    ]
    if customer["personal_data"] == "erased":
        lines.append("  personal data: erased")
    for name in (*PERSONAL_FIELDS, "locale", "tags", "owner", "created_at", "updated_at"):
        value = customer.get(name)
        if value not in (None, [], {}):
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            lines.append(f"  {name:<13} {shown}")
    lines += ["", "Consents:"]
    for entry in document["consents"]["history"]:
        lines.append(
            f"  {entry['at']}  {entry['state']:<9}  {entry['purpose']}  via {entry['channel']}"
            + (f", form {entry['form']}" if entry["form"] else "")
            + (f", proof {entry['proof']}" if entry["proof"] else "")
        )
    if not document["consents"]["history"]:
        lines.append("  none recorded")
    lines += ["", "Purposes and lawful bases:"]
    for purpose in document["purposes"]:
        state = "applies" if purpose["applies"] else f"does not apply ({purpose['why_not']})"
        lines.append(
            f"  {purpose['key']}: {purpose['lawful_basis']}; {state}; "
            f"uses {', '.join(purpose['categories'])}"
        )
    lines += ["", "Categories held:"]
    for category in document["categories"]:
        if category["personal"]:
            held = {True: "held", False: "not held", None: "erased"}[category["held"]]
            lines.append(
                f"  {category['field']:<13} {category['category']} ({category['sensitivity']}): "
                f"{held}"
            )
    lines += ["", "Retention:"]
    for row in document["retention"]:
        due = row["due"] or row["note"]
        lines.append(f"  {row['field']:<13} {row['category']}: until {due}")
    lines += ["", "Recipients (who received the data):"]
    for row in document["recipients"]:
        lines.append(
            f"  {row['at']}  {row['principal']}  purpose {row['purpose']}  "
            f"{row['method'] or '-'}  fields {', '.join(row['fields'])}"
        )
    if not document["recipients"]:
        lines.append("  none recorded")
    lines += ["", f"History: {len(document['history'])} events (see the JSON export)"]
    return "\n".join(lines)
