"""Destroying some data categories of one customer and keeping the rest (issue 14).

Retention keeps some data for law (the name, for tax records) while other data must go
(contact details after two years without activity). Customers registered with category
keys (`ledger.crypto_shred.category_keys`) have one key per category; destroying a
category is destroying its key, in the order `CustomerLedger.erase` uses for a whole
customer:

1. a `Customer.CategoriesErased` event in the log (which categories and fields, who, the
   legal basis, the key ids; no personal data): from then on the log answers "is it
   destroyed" per category, whatever a restored key store or a re-inserted key row holds;
2. the registry is told, then the keys are removed from the customer's key bundle;
3. derived copies: the projections fold the event (the customer's rows are re-written
   without the destroyed fields and re-sealed; blocking keys follow the rows), in-memory
   caches drop the customer;
4. a signed certificate, appended to the category erasure journal (kept beside the
   erasure journal, outside the databases) before this returns.

If the process stops after step 1, `reshred_categories` (run at every open) finishes the
key destruction. A customer registered before category keys has one key: only the whole
customer can be erased (a clear error says so, nothing is written).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from ledger.crypto_shred import journal
from ledger.crypto_shred.category_keys import KEYED_CATEGORIES, key_category_of
from ledger.crypto_shred.certificate import ErasureCertificate, SignedCertificate
from ledger.crypto_shred.erasures import CATEGORIES_ERASED_TOPIC
from ledger.domain.customer import Customer
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.policy.classification import FIELDS, covers

if TYPE_CHECKING:
    from ledger.application import CustomerLedger

log = logging.getLogger("ledger")

REAPPLIED_REASON = "re-applied from the category erasure journal after a restore"


def keyed_categories_under(category: str) -> tuple[str, ...]:
    """The category keys a policy category reaches (`user.contact` reaches the email,
    phone and address keys); empty when it reaches no personal field."""
    return tuple(c for c in KEYED_CATEGORIES if covers(category, c))


def resolve(categories: Sequence[str]) -> tuple[list[str], list[str]]:
    """(category keys, fields) named by `categories`; ValidationFailed naming the field
    `categories` for an empty list or a category that reaches no personal field."""
    if isinstance(categories, str) or not categories:
        raise ValidationFailed([FieldViolation("categories", "name at least one data category")])
    keyed: set[str] = set()
    violations = []
    for index, category in enumerate(categories):
        reached = keyed_categories_under(category) if isinstance(category, str) else ()
        if not reached:
            violations.append(
                FieldViolation(
                    f"categories[{index}]",
                    f"{category!r} is not a data category of any personal field "
                    f"(known: {', '.join(KEYED_CATEGORIES)})",
                )
            )
        keyed.update(reached)
    if violations:
        raise ValidationFailed(violations)
    fields = sorted(e.field for e in FIELDS if key_category_of(e.field) in keyed)
    return sorted(keyed), fields


def category_journal_paths(ledger: CustomerLedger) -> tuple[Path, ...]:
    """Beside each erasure journal file: its own file, so a whole-customer journal replay
    never mistakes a category certificate for the erasure of the whole customer."""
    return tuple(p.with_name(p.name + ".categories") for p in ledger.settings.erasure_journal_paths)


def destroy_categories(
    ledger: CustomerLedger,
    customer_id: UUID,
    categories: Sequence[str],
    *,
    actor: str,
    reason: str | None,
    legal_basis: str,
) -> SignedCertificate:
    """Destroy these data categories of one customer (a category covers its sub-categories:
    `user.contact` destroys email, phone and address), keep the rest readable.

    Errors, all before anything is written: ValidationFailed naming `categories`,
    `legal_basis`, `actor` or `reason`; CustomerNotFound; CustomerErasedError (erased
    whole already); ValidationFailed on `categories` when the customer has one key only
    (registered before category keys) or every named category is destroyed already."""
    from ledger.application import _check_actor

    _check_actor(actor, reason, ("legal_basis", legal_basis))
    if not legal_basis.strip():
        raise ValidationFailed([FieldViolation("legal_basis", "must not be empty")])
    keyed, _ = resolve(categories)
    customer = ledger._load_for_command(customer_id, None)
    key = ledger.keys.get(customer_id)
    already = ledger.erasures.erased_categories(customer_id)
    if key is None or not key.bundled:
        raise ValidationFailed(
            [
                FieldViolation(
                    "categories",
                    f"customer {customer_id} has a single data key (registered before "
                    "category keys): only the whole customer can be erased",
                )
            ]
        )
    todo = [c for c in keyed if c not in already]
    if not todo:
        raise ValidationFailed(
            [FieldViolation("categories", f"already destroyed for customer {customer_id}")]
        )
    fields = sorted(e.field for e in FIELDS if key_category_of(e.field) in set(todo))
    key_ids = {c: key.categories[c].key_id for c in todo if c in key.categories}
    customer.erase_categories(
        todo, fields, actor=actor, reason=reason, legal_basis=legal_basis, key_ids=key_ids
    )
    ledger._save(customer, None)
    _finish(ledger, customer_id, todo)
    log.info("destroyed %d data categories of customer %s", len(todo), customer_id)
    signed = SignedCertificate.issue(_certificate(ledger, customer), ledger.signer)
    journal.append(category_journal_paths(ledger), [signed])
    return signed


def _finish(ledger: CustomerLedger, customer_id: UUID, categories: list[str]) -> None:
    """Tell the registry (before the keys die: no reader sees a key missing without
    knowing why), destroy the keys, then let every derived copy follow."""
    ledger.erasures.add_categories(customer_id, categories)
    ledger.keys.destroy_categories(customer_id, categories)
    refresh_derived_copies(ledger, customer_id)


def refresh_derived_copies(ledger: CustomerLedger, customer_id: UUID) -> None:
    """Caches drop the customer; projections apply the CategoriesErased event now (the
    current view and duplicate index rows are re-written without the destroyed fields,
    blocking keys included)."""
    if ledger.repository.cache is not None:
        with contextlib.suppress(KeyError):
            ledger.repository.cache.get(customer_id, evict=True)
    ledger.keys.forget(customer_id)
    for forget in ledger.category_purgers:
        forget(customer_id)
    if ledger.projections is not None:
        ledger.projections.catch_up()


def _certificate(ledger: CustomerLedger, customer: Customer) -> ErasureCertificate:
    events = [e for e in ledger._events(customer.id) if isinstance(e, Customer.CategoriesErased)]
    return certificate_of(ledger, events[-1])


def certificate_of(ledger: CustomerLedger, event: Customer.CategoriesErased) -> ErasureCertificate:
    """Every field of a category certificate is in its event: it can be re-issued from
    the log (journal catch-up) and checked against it."""
    return ErasureCertificate(
        customer_id=str(event.originator_id),
        erased_at=event.timestamp.astimezone(UTC).isoformat(),
        actor=event.actor,
        legal_basis=event.legal_basis,
        reason=event.reason or "",
        key_id=",".join(f"{c}={k}" for c, k in sorted(event.key_ids.items())),
        last_version=event.originator_version,
        ledger_key_id=ledger.signer.key_id(),
        categories=",".join(sorted(event.categories)),
    )


def reshred_categories(ledger: CustomerLedger) -> int:
    """At open: every category the log says is destroyed leaves the key store again (a
    store restored from a backup, or a re-inserted row, holds it). Returns how many
    customers needed it."""
    ledger.erasures.refresh()
    pending = {
        customer_id: categories
        for customer_id, categories in ledger.erasures.category_erasures().items()
        if not ledger.erasures.is_erased(customer_id)
    }
    if not pending:
        return 0
    # One read per 500 customers (the common case: nothing to do); writes only for keys
    # that hold a destroyed category again.
    stored = ledger.keys.store.get_many(sorted(pending))
    fixed = 0
    for customer_id, key in sorted(stored.items()):
        categories = pending[customer_id]
        if categories.isdisjoint(key.categories):
            continue
        removed = ledger.keys.destroy_categories(customer_id, sorted(categories))
        if removed:
            fixed += 1
            refresh_derived_copies(ledger, customer_id)
            log.warning(
                "re-shredded %d category keys of customer %s (restored key store?)",
                len(removed),
                customer_id,
            )
    return fixed


def replay_category_journal(ledger: CustomerLedger) -> int:
    """At open: a signed category certificate whose destruction the (restored) log lacks
    is recorded again (an event whose reason says so) and its keys destroyed. Forged or
    altered entries are refused and logged. Returns how many were re-applied."""
    public_key = ledger.signer.public_key_pem()
    ledger.erasures.refresh()
    reapplied = 0
    for path in category_journal_paths(ledger):
        entries, malformed = journal.read(path).parsed()
        if malformed:
            log.error("category erasure journal %s: %d malformed lines", path, len(malformed))
        for entry in entries:
            certificate = entry.certificate
            if not certificate.categories:
                continue
            try:
                customer_id = UUID(certificate.customer_id)
            except ValueError:
                continue
            wanted = set(certificate.category_list)
            if wanted <= ledger.erasures.erased_categories(customer_id):
                continue
            if ledger.erasures.is_erased(customer_id):
                continue
            if not entry.verify(public_key):
                log.error(
                    "category erasure journal %s: the entry for customer %s is not signed by "
                    "this ledger's key; not applied",
                    path,
                    customer_id,
                )
                continue
            if _reapply(ledger, customer_id, certificate):
                reapplied += 1
    _catch_up(ledger)
    return reapplied


def _catch_up(ledger: CustomerLedger) -> None:
    """A journal file that lacks a destruction the log holds (its write failed, or the
    file is new) gets the certificate re-issued from the log's event."""
    wanted = {
        customer_id: categories
        for customer_id, categories in ledger.erasures.category_erasures().items()
        if not ledger.erasures.is_erased(customer_id)
    }
    if not wanted:
        return
    for path in category_journal_paths(ledger):
        entries, _ = journal.read(path).parsed()
        held: dict[str, set[str]] = {}
        for entry in entries:
            held.setdefault(entry.certificate.customer_id, set()).update(
                entry.certificate.category_list
            )
        missing: list[SignedCertificate] = []
        for customer_id, categories in sorted(wanted.items()):
            if categories <= held.get(str(customer_id), set()):
                continue
            for event in ledger._events(customer_id):
                if isinstance(event, Customer.CategoriesErased) and not set(
                    event.categories
                ) <= held.get(str(customer_id), set()):
                    missing.append(
                        SignedCertificate.issue(certificate_of(ledger, event), ledger.signer)
                    )
        try:
            journal.append([path], missing)
        except journal.JournalWriteFailed as exc:
            log.error(
                "category erasure journal %s lacks %d destructions the log holds and cannot "
                "be written (%s); the next start tries again",
                path,
                len(missing),
                exc.failures[0][1],
            )
        else:
            if missing:
                log.warning(
                    "category erasure journal %s: %d destructions journaled from the log",
                    path,
                    len(missing),
                )


def _reapply(ledger: CustomerLedger, customer_id: UUID, certificate: ErasureCertificate) -> bool:
    from ledger.domain.errors import CustomerNotFound

    try:
        customer = ledger._load_without_keys(customer_id)
    except CustomerNotFound:
        return False
    if customer.is_erased:
        return False
    todo = sorted(set(certificate.category_list) - ledger.erasures.erased_categories(customer_id))
    fields = sorted(e.field for e in FIELDS if key_category_of(e.field) in set(todo))
    key_ids = dict(pair.split("=", 1) for pair in certificate.key_id.split(",") if "=" in pair)
    reason = REAPPLIED_REASON
    if certificate.reason:
        reason = f"{REAPPLIED_REASON}; certificate reason: {certificate.reason}"
    customer.erase_categories(
        todo,
        fields,
        actor=certificate.actor,
        reason=reason,
        legal_basis=certificate.legal_basis,
        key_ids={c: k for c, k in key_ids.items() if c in todo},
        despite_hold=True,  # the destruction happened; a restored hold cannot undo it
    )
    ledger._save(customer, None)
    _finish(ledger, customer_id, todo)
    log.warning("re-applied the journaled category erasure of customer %s", customer_id)
    return True


def erased_categories(ledger: CustomerLedger, customer_id: UUID) -> frozenset[str]:
    """The customer's categories the log says are destroyed (for retention planning)."""
    ledger.erasures.refresh()
    return ledger.erasures.erased_categories(customer_id)


__all__ = [
    "CATEGORIES_ERASED_TOPIC",
    "destroy_categories",
    "erased_categories",
    "reshred_categories",
    "resolve",
]
