"""The application service: the thin layer between callers (CLI, later gRPC) and the domain.

It loads customers, asks the aggregate to decide, saves the resulting events, and handles
the keys. Rules live in `ledger.domain`; sealing lives in the mapper.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    EventStore,
    Mapper,
    RecordConflictError,
    Recording,
    StoredEvent,
)

from ledger.audit.access_log import AccessLog
from ledger.audit.head_signer import TreeHeadSigner
from ledger.audit.history import FieldChange, field_history, is_personal
from ledger.audit.leaf_mac import leaf_key
from ledger.audit.publication import PublishedHeads
from ledger.audit.recorders import LeafAuthentication
from ledger.audit.storage import AuditStore, AuditStoreError, close_idle_audit_connections
from ledger.audit.tree_heads import (
    PublicationError,
    RefusedToSign,
    TreeHead,
    authenticate_legacy_leaves,
    issue_tree_head,
)
from ledger.config import Settings
from ledger.crypto_shred import journal
from ledger.crypto_shred.certificate import ErasureCertificate, SignedCertificate
from ledger.crypto_shred.erasures import (
    CATEGORIES_ERASED_TOPIC,
    ERASED_TOPIC,
    ErasureRegistry,
)
from ledger.crypto_shred.keyring import KeyMissing, KeyRing, PendingKeys
from ledger.crypto_shred.mapper import EncryptingMapper
from ledger.domain.customer import Customer
from ledger.domain.errors import (
    ConcurrentChange,
    CustomerNotFound,
    FieldViolation,
    HistoryNotFound,
    MergeRefused,
    StaleVersion,
    ValidationFailed,
)
from ledger.domain.profile import (
    PERSONAL_FIELDS,
    validate_changes,
    validate_owner,
    validate_registration,
)
from ledger.domain.text import storable_violations
from ledger.group_commit import GroupCommitter, Write
from ledger.signing import LedgerSigner
from ledger.views import CustomerView, HistoryEntry

if TYPE_CHECKING:
    from ledger.audit.recorders import InsertedBatch
    from ledger.crypto_shred.replay import ReplayReport
    from ledger.projections.runner import ProjectionRunner


class InlineProjections(Protocol):
    """Projections written in the transaction that stores their events."""

    def apply_inserted(self, events: Sequence[object], batch: InsertedBatch) -> None: ...
    def skipped(self, end: int) -> None: ...


log = logging.getLogger("ledger")
T = TypeVar("T")

MAX_REASON = 500
# The reason of an Erased event written by replaying the erasure journal after a restore.
REAPPLIED_REASON = "re-applied from the erasure journal after a restore"


class _ErasureScanner(Protocol):
    """What the ledger's recorders add (`ledger.audit.recorders`)."""

    select_all_erasures: Callable[[int], Sequence[tuple[int, UUID, bytes | None]]]


class ErasureAwareEvents(EventStore[UUID]):
    """Reads of one customer's stream (aggregate, history, as-of, field history, export):
    when the stored events hold the customer's Erased event the whole stream is decoded as
    erased, without looking up any key. Exact and free: the events are read anyway, and
    whatever a restored key store holds, nothing of an erased customer is decrypted."""

    def get(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Iterator[DomainEventProtocol[UUID]]:
        stored = self.recorder.select_events(
            originator_id=originator_id, gt=gt, lte=lte, desc=desc, limit=limit
        )
        mapper = self.mapper
        if isinstance(mapper, EncryptingMapper) and any(s.topic == ERASED_TOPIC for s in stored):
            return iter([mapper.to_domain_event(s, erased=True) for s in stored])
        # A partial read without the Erased event: the key ring asks the log-derived
        # registry before any key is used.
        return map(mapper.to_domain_event, stored)


def _check_actor(actor: str, reason: str | None, *more: tuple[str, object]) -> None:
    """Every command's free text (actor, reason, and `more` such as the legal basis) is
    stored in the event and shown by `ledger history`: the stored-text rule applies
    (`ledger.domain.text`), before anything is loaded or written."""
    violations = storable_violations((("actor", actor), ("reason", reason), *more))
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        violations.append(
            FieldViolation("actor", "must be a non-empty name of at most 200 characters")
        )
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        violations.append(
            FieldViolation("reason", f"must be text of at most {MAX_REASON} characters")
        )
    if violations:
        raise ValidationFailed(violations)


class CustomerLedger(Application[UUID]):
    """Customers as event-sourced aggregates whose personal data is sealed per customer."""

    name = "ledger"

    def __init__(self, settings: Settings, keys: KeyRing, signer: LedgerSigner) -> None:
        self.settings = settings
        self.keys = keys
        self.signer = signer
        # Projections, indexes and caches register here to drop their copy of a customer
        # in the same step as the key is destroyed (DESIGN invariant 3).
        self.erasure_purgers: list[Callable[[UUID], None]] = []
        # In-memory copies to drop when some categories of a customer are destroyed
        # (`ledger.crypto_shred.category_erasure`; projections re-fold instead).
        self.category_purgers: list[Callable[[UUID], None]] = []
        # Called after every save (in-process projections catch up here when a save could
        # not be applied to them in its own transaction; bounded lag).
        # Hooks must not raise: the events are committed whatever they do.
        self.after_save: list[Callable[[], None]] = []
        # The projections fed from this ledger's log (set by `ledger.bootstrap`).
        self.projections: ProjectionRunner | None = None
        # Inline projections: given each save's events and the batch as inserted, inside
        # the transaction that stores them (`ledger.audit.recorders.InsertedBatch`).
        self.inline_projections: InlineProjections | None = None
        super().__init__(env=settings.eventsourcing_env())
        # Who is erased, read from this log: the key ring asks it before the key store.
        self.erasures = ErasureRegistry(scan_all=self._scan_all_erasures)
        self.erasures.refresh()
        self.keys.erasures = self.erasures
        # Erasures this process completed (read by the metrics endpoint).
        self.erasures_done = 0
        # Set by `ledger.bootstrap` when the key store is in the event store's own
        # database: new customers' keys are then stored in the transaction that stores
        # their events (one commit instead of two, and no orphan keys).
        self.keys_with_events = False
        self.committer = GroupCommitter(
            save=self._save_batch,
            create_keys=self.keys.create_many,
            after_commit=self._after_commit,
            stored=self._already_stored,
        )
        # Reads of personal data are recorded as events in this same log (ledger.audit),
        # through the group committer: concurrent reads share one transaction.
        self.access_log = AccessLog(
            self, commit=lambda events: self.committer.commit(Write(events, after_commit=False))
        )
        self._signs_on_close = True
        # Signed heads go outside the database too; leaves carry a MAC under a key derived
        # from the signing key (ledger.audit.leaf_mac), which the recorder needs first.
        self.published_heads = PublishedHeads(settings.resolved_tree_head_file)
        self.tree_head_signer: TreeHeadSigner | None = None
        # What replaying the erasure journal at open found (set by `ledger.bootstrap`).
        self.journal_replay: ReplayReport | None = None
        if isinstance(self.recorder, LeafAuthentication):
            self.recorder.leaf_key = leaf_key(signer)
            self._authenticate_legacy_leaves()

    def _scan_all_erasures(self, after: int) -> list[tuple[int, UUID, Sequence[str] | None]]:
        """Erased and CategoriesErased events after `after` (one query); the latter decoded
        to the categories they destroyed (they hold no personal data: no key is used)."""
        rows = cast(_ErasureScanner, self.recorder).select_all_erasures(after)
        found: list[tuple[int, UUID, Sequence[str] | None]] = []
        for position, customer_id, state in rows:
            if state is None:
                found.append((position, customer_id, None))
                continue
            stored = StoredEvent(customer_id, 0, CATEGORIES_ERASED_TOPIC, state)
            event = self.mapper.to_domain_event(stored)
            found.append((position, customer_id, list(getattr(event, "categories", ()))))
        return found

    def _save_batch(self, events: Sequence[Any], new_keys: Sequence[PendingKeys]) -> None:
        if not new_keys:
            self.save(*events)
            return
        rows = [row for pending in new_keys for row in pending.rows]
        self.save(*events, new_keys=(new_keys[0].statement, rows))

    def _already_stored(self, events: Sequence[Any]) -> bool:
        """True when every one of `events` is in the log as this very event (same aggregate,
        version, type and timestamp to the microsecond), i.e. an earlier attempt at this
        save committed: the group committer asks this on a conflict."""
        for event in events:
            version = getattr(event, "originator_version", None)
            if not isinstance(version, int):
                return False
            found = self.recorder.select_events(
                event.originator_id, gt=version - 1, lte=version, limit=1
            )
            if not found:
                return False
            stored = self.mapper.to_domain_event(found[0])
            when = getattr(stored, "timestamp", None)
            if (
                when is None
                or type(stored) is not type(event)
                or when != getattr(event, "timestamp", None)
            ):
                return False
        return True

    def construct_event_store(self) -> EventStore[UUID]:
        return ErasureAwareEvents(mapper=self.mapper, recorder=self.recorder)

    def construct_mapper(self) -> Mapper[UUID]:
        return EncryptingMapper(transcoder=self.construct_transcoder(), keys=self.keys)

    def close(self) -> None:
        # Once only: the library's __del__ closes again when the object is collected, which
        # may be at interpreter shutdown, when nothing can be imported any more.
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self.committer.close()
        if self.tree_head_signer is not None:
            self.tree_head_signer.stop()
        if self.committer.batches:
            log.info(
                "group commit: %d writes in %d transactions; seconds in keys %.1f, "
                "events %.1f, after-commit hooks %.1f",
                self.committer.writes,
                self.committer.batches,
                *self.committer.stage_seconds.values(),
            )
        if not self.closing.is_set() and getattr(self, "_signs_on_close", False):
            self._issue_tree_head_if_grown()
        if self.projections is not None:
            self.projections.close()
        super().close()
        self.keys.store.close()
        if self.settings.store.kind == "postgresql":
            close_idle_audit_connections(self.settings.store.postgres_dsn)

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        """Store the events with the inline projections' rows in the same transaction. If
        that transaction fails, whatever the cause, the events are stored once more on
        their own and the projections catch up from the log: a projection's failure must
        never fail a command (a genuine conflict simply fails again)."""
        inline = self.inline_projections
        if inline is None:
            return super()._record(processing_event)
        events = list(processing_event.events)

        def in_transaction(batch: InsertedBatch) -> None:
            inline.apply_inserted(events, batch)

        processing_event.saved_kwargs["in_transaction"] = in_transaction
        try:
            return super()._record(processing_event)
        except Exception:
            del processing_event.saved_kwargs["in_transaction"]
        recordings = super()._record(processing_event)
        if recordings:
            inline.skipped(max(r.notification.id for r in recordings))
        return recordings

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        # On the group committer's event thread the hooks would hold up the next batch;
        # its answer stage runs them (`_after_commit`) before the callers hear back.
        if self.committer.in_committer():
            return
        self._after_commit()

    def _after_commit(self) -> None:
        for hook in self.after_save:
            hook()

    def __del__(self) -> None:
        # The library closes forgotten applications when they are garbage collected; a tree
        # head signed then would come at an arbitrary moment, so only an explicit close signs.
        self._signs_on_close = False
        super().__del__()

    def issue_tree_head(self) -> TreeHead:
        """Sign the Merkle log as it stands and publish the head (a no-op returning the
        latest head when nothing was added since)."""
        with AuditStore.open(self.settings) as store:
            return issue_tree_head(store, self.signer, published=self.published_heads)

    def start_tree_head_signer(self) -> TreeHeadSigner:
        """Long-running processes: sign every LEDGER_TREE_HEAD_SECONDS and every
        LEDGER_TREE_HEAD_EVERY events, in a background thread, until `close()`."""
        if self.tree_head_signer is None:
            signer = TreeHeadSigner(
                self.issue_tree_head,
                seconds=self.settings.tree_head_seconds,
                every=self.settings.tree_head_every,
            )
            if isinstance(self.recorder, LeafAuthentication):
                self.recorder.grown = signer.grown
            signer.start()
            self.tree_head_signer = signer
        return self.tree_head_signer

    def _authenticate_legacy_leaves(self) -> None:
        """A store from before leaves carried a MAC gets them once (see
        `authenticate_legacy_leaves`); a failure is logged, and the signer then refuses."""
        try:
            with AuditStore.open(self.settings) as store:
                authenticate_legacy_leaves(store, self.signer, self.published_heads)
        except (AuditStoreError, PublicationError, RefusedToSign) as exc:
            log.error("leaf MACs not backfilled: %s: %s", type(exc).__name__, exc)

    def _issue_tree_head_if_grown(self) -> None:
        """Each process signs what it wrote before it goes (the CLI: once per command), and
        publishes the newest head if the publication lags (a store from before publication).
        Best effort: the leaves are already committed with the events; a failure here only
        delays the signature, and must not mask the command's own outcome."""
        try:
            with AuditStore.open(self.settings) as store:
                latest = store.latest_tree_head()
                size = store.size()
                published = self.published_heads.latest(None)
                if (
                    latest is None
                    or size != latest.tree_size
                    or published is None
                    or (published.tree_size != size)
                ):
                    issue_tree_head(store, self.signer, published=self.published_heads)
        except Exception as exc:
            log.warning("no tree head issued: %s: %s", type(exc).__name__, exc)

    # Commands -----------------------------------------------------------------------------

    def register(
        self,
        profile: Mapping[str, Any],
        *,
        actor: str,
        reason: str | None = None,
        customer_id: UUID | None = None,
    ) -> UUID:
        """`customer_id`: an id the caller reserved (idempotent API retries). A live key left
        by an interrupted attempt with that id is reused; a destroyed one never is, and a
        second registration under the same id fails (RecordConflictError)."""
        return self._register(profile, actor, reason, customer_id).id

    def register_view(
        self,
        profile: Mapping[str, Any],
        *,
        actor: str,
        reason: str | None = None,
        also: Callable[[CustomerView], Sequence[object]] | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> CustomerView:
        """`register`, answering with the new customer as stored — without reading it
        back: the aggregate just committed is that state. `check(validated profile)`: a
        last check before anything is written, which refuses by raising (the API's
        duplicate policy). `also(view)`: events to store in the same transaction (the
        API's record of the caller reading that answer)."""
        views: list[CustomerView] = []

        def keep_view(view: CustomerView) -> Sequence[object]:
            views.append(view)
            return also(view) if also is not None else ()

        self._register(profile, actor, reason, None, keep_view, check)
        return views[0]

    def _register(
        self,
        profile: Mapping[str, Any],
        actor: str,
        reason: str | None,
        customer_id: UUID | None,
        also: Callable[[CustomerView], Sequence[object]] | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> Customer:
        _check_actor(actor, reason)
        validated = validate_registration(profile, default_region=self.settings.default_region)
        if check is not None:
            check(validated)
        pending: PendingKeys | None = None
        if customer_id is None:
            customer_id = uuid4()
            new_key: UUID | None = customer_id
            if self.keys_with_events:
                # A fresh id: its key can only be this one, stored with its events.
                pending, new_key = self.keys.prepare([customer_id]), None
        else:
            # "No key yet" (an earlier attempt may have left one), not "is it erased".
            new_key = customer_id if self.keys.stored_key(customer_id) is None else None
        customer = Customer.register(customer_id, validated, actor, reason)
        events: list[Any] = list(customer.collect_events())
        if also is not None:
            events += also(CustomerView.of(customer))
        stored = False
        try:
            self.committer.commit(Write(events, new_key_for=new_key, new_keys=pending))
            stored = True
        finally:
            if pending is not None:
                self.keys.settle(pending, stored=stored)
        log.info("registered customer %s", customer_id)
        return customer

    def register_many(
        self,
        registrations: Sequence[tuple[Mapping[str, Any], Sequence[FieldViolation]]],
        *,
        actor: str,
        reason: str | None = None,
        default_region: str | None = None,
        then: Callable[[int, Customer], None] | None = None,
    ) -> list[UUID]:
        """Register many customers in one transaction (imports): the keys in one key-store
        transaction, the events in one save. All or nothing; a profile that fails
        validation refuses the batch, its violations prefixed with its index. Each
        registration may carry data-quality warnings (field and reason, never a value),
        recorded as a `DataQualityFlagged` event right after `Registered`.

        `default_region` (else LEDGER_DEFAULT_REGION) reads national phone numbers: an
        import passes its `--default-country`, so a profile it validated is validated
        here the same way (with another region it could be refused mid-import).

        `then(index, customer)`: more events on each new customer, stored in the same save
        (an import's consent columns, `ledger.importer`)."""
        _check_actor(actor, reason)
        region = self.settings.default_region if default_region is None else default_region
        customers: list[Customer] = []
        violations: list[FieldViolation] = []
        for index, (profile, warnings) in enumerate(registrations):
            try:
                validated = validate_registration(profile, default_region=region)
            except ValidationFailed as exc:
                violations += [
                    FieldViolation(f"[{index}].{v.field}", v.reason) for v in exc.violations
                ]
                continue
            customer = Customer.register(uuid4(), validated, actor, reason)
            if warnings:
                customer.flag_quality(list(warnings), actor, reason)
            if then is not None:
                then(index, customer)
            customers.append(customer)
        if violations:
            raise ValidationFailed(violations)
        if not customers:
            return []
        self.keys.create_many([customer.id for customer in customers])
        self.save(*customers)
        log.info("registered %d customers in one batch", len(customers))
        return [customer.id for customer in customers]

    def change(
        self,
        customer_id: UUID,
        changes: Mapping[str, Any],
        *,
        actor: str,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> list[str]:
        """Returns the names of the fields that changed (empty: nothing to do, nothing written)."""
        _check_actor(actor, reason)
        customer = self._load_for_command(customer_id, expected_version)
        validated = validate_changes(changes, default_region=self._region_of(customer))
        changed = customer.change(validated, actor, reason)
        self._save(customer, expected_version)
        log.info("changed customer %s fields=%s", customer_id, ",".join(changed))
        return changed

    def assign_owner(
        self,
        customer_id: UUID,
        owner: str,
        *,
        actor: str,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> bool:
        _check_actor(actor, reason)
        owner = validate_owner(owner)
        customer = self._load_for_command(customer_id, expected_version)
        changed = customer.assign_owner(owner, actor, reason)
        self._save(customer, expected_version)
        return changed

    def mark_verified(
        self,
        customer_id: UUID,
        *,
        actor: str,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> None:
        _check_actor(actor, reason)
        customer = self._load_for_command(customer_id, expected_version)
        customer.mark_verified(actor, reason)
        self._save(customer, expected_version)

    def merge(
        self,
        target_id: UUID,
        source_id: UUID,
        *,
        actor: str,
        take: Collection[str] = (),
        reason: str | None = None,
        expected_version: int | None = None,
        expected_source_version: int | None = None,
    ) -> list[str]:
        """Merge `source_id` into `target_id`: the target absorbs the source's values (see
        `Customer.absorb`), the source becomes merged-into-target. Both events in one
        transaction. Returns the target's fields that changed. The expected versions (the
        API's etags) refuse the merge with StaleVersion if either side changed since read."""
        _check_actor(actor, reason)
        if target_id == source_id:
            raise MergeRefused(f"customer {target_id} cannot be merged into itself")
        target = self._load_for_command(target_id, expected_version)
        source = self._load_for_command(source_id, expected_source_version)
        changed = target.absorb(source, take, actor, reason)
        source.merge_into(target.id, actor, reason)
        self._save_all(target, source)
        log.info("merged customer %s into %s fields=%s", source_id, target_id, ",".join(changed))
        return changed

    def unmerge(
        self,
        source_id: UUID,
        *,
        actor: str,
        reason: str | None = None,
        expected_target_version: int | None = None,
    ) -> tuple[UUID, list[str], list[str]]:
        """Undo the merge of `source_id`: it is a customer of its own again and the
        customer it was merged into gets back the values it had before. Returns (that
        customer's id, restored fields, fields kept because they changed since)."""
        _check_actor(actor, reason)
        source = self._load(source_id)
        target_id = source.unmerge(actor, reason)
        target = self._load_for_command(target_id, expected_target_version)
        restored, kept = target.undo_absorb(source.id, actor, reason)
        self._save_all(target, source)
        log.info("unmerged customer %s from %s", source_id, target_id)
        return target_id, restored, kept

    def dismiss_duplicate(
        self, first_id: UUID, second_id: UUID, *, actor: str, reason: str | None = None
    ) -> None:
        """Record that two customers are not the same person (a `DuplicateDismissed` event
        on each, in one transaction): they are no longer reported as likely duplicates of
        each other, and the model fit counts the pair as a non-match."""
        _check_actor(actor, reason)
        if first_id == second_id:
            raise MergeRefused(f"customer {first_id} cannot be dismissed as its own duplicate")
        first = self._load_for_command(first_id, None)
        second = self._load_for_command(second_id, None)
        first.dismiss_duplicate(second, actor, reason)
        second.dismiss_duplicate(first, actor, reason)
        self._save_all(first, second)
        log.info("dismissed customers %s and %s as duplicates", first_id, second_id)

    def _save_all(self, *customers: Customer) -> None:
        try:
            self.save(*customers)
        except RecordConflictError:
            raise ConcurrentChange(
                "one of the customers changed meanwhile; nothing was written, try again"
            ) from None

    def erase(
        self, customer_id: UUID, *, actor: str, legal_basis: str, reason: str | None = None
    ) -> SignedCertificate:
        """Record the erasure, destroy the key, drop cached copies, sign a certificate.

        The event is written before the key dies: if the process stops in between, the
        event in the log makes `reshred()` finish the job before the next read.
        """
        _check_actor(actor, reason, ("legal_basis", legal_basis))
        try:
            customer = self._load_for_command(customer_id, None)
        except KeyMissing:
            # The key is lost already (an integrity failure, reported as such on reads):
            # the erasure is still owed, and recording it needs no key.
            log.warning("erasing customer %s whose data key is missing", customer_id)
            customer = self._load_without_keys(customer_id)
            customer.refuse_if_erased()
        self._refuse_to_orphan_merged(customer)
        key_id = self.keys.record(customer_id).key_id
        customer.erase(actor, reason, legal_basis, key_id)
        self._save(customer, None)
        self.erasures.add(customer_id)  # before the key dies: no reader sees it missing
        self.keys.destroy(customer_id)
        self._purge_derived_copies(customer_id)
        self.erasures_done += 1
        log.info("erased customer %s", customer_id)
        certificate = ErasureCertificate(
            customer_id=str(customer_id),
            erased_at=customer.modified_on.astimezone(UTC).isoformat(),
            actor=actor,
            legal_basis=legal_basis,
            reason=reason or "",
            key_id=key_id or "",
            last_version=customer.version,
            ledger_key_id=self.signer.key_id(),
        )
        signed = SignedCertificate.issue(certificate, self.signer)
        self._journal(signed)
        return signed

    def _journal(self, signed: SignedCertificate) -> None:
        """Append the certificate to the erasure journal and its copies before `erase`
        returns: a restore of the databases from before now replays it from there."""
        try:
            journal.append(self.settings.erasure_journal_paths, [signed])
        except journal.JournalWriteFailed as exc:
            log.error(
                "erasure of customer %s is in the log and its key destroyed, but not "
                "journaled (%s); the next start journals it from the log",
                signed.certificate.customer_id,
                "; ".join(f"{path}: {why}" for path, why in exc.failures),
            )
            raise

    def certificate_from_log(self, customer_id: UUID) -> SignedCertificate | None:
        """The certificate `erase` issued for this customer, rebuilt from its Erased event
        (every field of a certificate is in the event) and signed again; None when the log
        records no erasure of it."""
        erased = None
        for record in self.recorder.select_events(customer_id):
            if record.topic == ERASED_TOPIC:
                mapper = self.mapper
                assert isinstance(mapper, EncryptingMapper)
                erased = mapper.to_domain_event(record, erased=True)
        if not isinstance(erased, Customer.Erased):
            return None
        certificate = ErasureCertificate(
            customer_id=str(customer_id),
            erased_at=erased.timestamp.astimezone(UTC).isoformat(),
            actor=erased.actor,
            legal_basis=erased.legal_basis,
            reason=erased.reason or "",
            key_id=erased.key_id or "",
            last_version=erased.originator_version,
            ledger_key_id=self.signer.key_id(),
        )
        return SignedCertificate.issue(certificate, self.signer)

    def reapply_erasure(self, certificate: ErasureCertificate) -> None:
        """Record again an erasure that a restore of the log lost, from its (checked)
        certificate, and destroy the key the restored key store holds. The event's reason
        says it was re-applied from the journal. CustomerNotFound: the customer is not in
        this log (registered after the backup; nothing of it was restored)."""
        customer_id = UUID(certificate.customer_id)
        customer = self._load_without_keys(customer_id)
        if customer.is_erased:
            return
        reason = REAPPLIED_REASON
        if certificate.reason:
            reason = f"{REAPPLIED_REASON}; certificate reason: {certificate.reason}"
        customer.erase(
            certificate.actor,
            reason,
            certificate.legal_basis,
            certificate.key_id or None,
            despite_hold=True,  # the erasure happened; a restored hold cannot undo it
        )
        self._save(customer, None)
        self.erasures.add(customer_id)
        self.keys.destroy(customer_id)
        self._purge_derived_copies(customer_id)

    def reshred(self) -> int:
        """Destroy the live key of every customer whose erasure is in the log.

        Run before serving reads: a key store restored from a backup may hold keys of
        customers erased since; the log is the authority. Compares the whole log-derived
        set of erased customers with the live keys (one query per 500 erased customers,
        reading no key bytes), so it trusts nothing the key store says about how far it
        has seen the log.
        """
        self.erasures.refresh()
        live = self.keys.store.live_among(sorted(self.erasures.erased_ids()))
        for customer_id in sorted(live):
            self.keys.destroy(customer_id)
            self._purge_derived_copies(customer_id)
            log.warning("re-shredded key of erased customer %s", customer_id)
        return len(live)

    # Hooks for use cases built as services of their own (ledger.policy) -------------------

    def run_command(
        self,
        customer_id: UUID,
        decide: Callable[[Customer], T],
        *,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
        with_keys: bool = False,
    ) -> T:
        """The one hook for use cases built as services of their own (consent, holds,
        contract ends): load the customer, let `decide` trigger its events, save them;
        returns what `decide` returned. The actor and reason are checked first, like every
        command's. Without `with_keys` the customer is loaded decrypting nothing (for
        commands that need status and links only)."""
        _check_actor(actor, reason)
        customer = self._load(customer_id) if with_keys else self._load_without_keys(customer_id)
        if expected_version is not None and expected_version != customer.version:
            raise StaleVersion(customer_id, expected_version, customer.version)
        result = decide(customer)
        self._save(customer, expected_version)
        return result

    def load_metadata(self, customer_id: UUID) -> Customer:
        """The customer with every personal value `ERASED`, decrypting nothing."""
        return self._load_without_keys(customer_id)

    def save_together(self, customers: Sequence[Customer], also: Sequence[Any] = ()) -> None:
        """Store the events of several customers, and `also` (events of other aggregates),
        in one transaction: all or nothing (ConcurrentChange if one changed meanwhile)."""
        events: list[Any] = [e for customer in customers for e in customer.collect_events()]
        events += list(also)
        if not events:
            return
        try:
            self.committer.commit(Write(events))
        except RecordConflictError:
            raise ConcurrentChange(
                "one of the customers changed meanwhile; nothing was written, try again"
            ) from None

    # Queries ------------------------------------------------------------------------------

    def get(self, customer_id: UUID) -> CustomerView:
        return CustomerView.of(self._load(customer_id))

    def history(self, customer_id: UUID) -> list[HistoryEntry]:
        events = self._events(customer_id)
        return [HistoryEntry.of(event) for event in events]

    def as_of(
        self, customer_id: UUID, *, version: int | None = None, at: datetime | None = None
    ) -> CustomerView:
        """The customer as it stood at a version or a moment (personal data as it is now:
        readable while the key lives, `ERASED` after)."""
        if (version is None) == (at is None):
            raise ValidationFailed([FieldViolation("as_of", "give exactly one of version or time")])
        events = self._events(customer_id)
        if version is not None:
            if version < 1:
                raise ValidationFailed([FieldViolation("version", "must be 1 or more")])
            selected = [e for e in events if e.originator_version <= version]
        else:
            assert at is not None
            if at.tzinfo is None:
                raise ValidationFailed([FieldViolation("time", "needs a UTC offset, e.g. Z")])
            selected = [e for e in events if e.timestamp <= at]
        if not selected:
            raise HistoryNotFound(f"customer {customer_id} did not exist at that point")
        aggregate: Customer | None = None
        for event in selected:
            aggregate = event.mutate(aggregate)
        assert aggregate is not None
        return CustomerView.of(aggregate)

    # Reads of personal data, each recorded in the access log before it is returned --------

    def read(
        self, customer_id: UUID, *, principal: str, purpose: str, os_user: str = "",
        method: str = "ledger.read",
    ) -> CustomerView:  # fmt: skip
        """`os_user`: the operating-system account behind a CLI read (recorded with it)."""
        view = self.get(customer_id)
        self.access_log.record(
            principal, purpose, [customer_id], PERSONAL_FIELDS, method=method, os_user=os_user
        )
        return view

    def read_history(
        self, customer_id: UUID, *, principal: str, purpose: str, os_user: str = "",
        method: str = "ledger.read_history",
    ) -> list[HistoryEntry]:  # fmt: skip
        entries = self.history(customer_id)
        self.access_log.record(
            principal, purpose, [customer_id], PERSONAL_FIELDS, method=method, os_user=os_user
        )
        return entries

    def read_as_of(
        self,
        customer_id: UUID,
        *,
        principal: str,
        purpose: str,
        version: int | None = None,
        at: datetime | None = None,
        os_user: str = "",
        method: str = "ledger.read_as_of",
    ) -> CustomerView:
        view = self.as_of(customer_id, version=version, at=at)
        self.access_log.record(
            principal, purpose, [customer_id], PERSONAL_FIELDS, method=method, os_user=os_user
        )
        return view

    def read_field_history(
        self, customer_id: UUID, field: str, *, principal: str, purpose: str, os_user: str = "",
        method: str = "ledger.read_field_history",
    ) -> list[FieldChange]:  # fmt: skip
        """Every event that set or cleared one field (a read of personal data only when
        the field is personal; owner, locale and tags are not)."""
        changes = field_history(self._events(customer_id), field)
        if is_personal(field):
            self.access_log.record(
                principal, purpose, [customer_id], [field], method=method, os_user=os_user
            )
        return changes

    # Internals ----------------------------------------------------------------------------

    def _events(self, customer_id: UUID) -> list[Customer.Event]:
        events = [e for e in self.events.get(customer_id) if isinstance(e, Customer.Event)]
        if not events:
            raise CustomerNotFound(customer_id)
        return events

    def _load(self, customer_id: UUID) -> Customer:
        try:
            customer: object = self.repository.get(customer_id)
        except AggregateNotFoundError:
            raise CustomerNotFound(customer_id) from None
        if not isinstance(customer, Customer):
            raise CustomerNotFound(customer_id)
        return customer

    def _load_without_keys(self, customer_id: UUID) -> Customer:
        """The customer with every personal value `ERASED`, decrypting nothing: for what
        needs only status, version and links (erasing, even when the key is lost)."""
        stored = self.recorder.select_events(customer_id)
        mapper = self.mapper
        assert isinstance(mapper, EncryptingMapper)
        customer: Any = None
        for record in stored:
            event = mapper.to_domain_event(record, erased=True)
            if isinstance(event, Customer.Event):
                customer = event.mutate(customer)
        if not isinstance(customer, Customer):
            raise CustomerNotFound(customer_id)
        return customer

    def _load_for_command(self, customer_id: UUID, expected_version: int | None) -> Customer:
        customer = self._load(customer_id)
        customer.refuse_if_erased()
        if expected_version is not None and expected_version != customer.version:
            raise StaleVersion(customer_id, expected_version, customer.version)
        return customer

    def _save(self, customer: Customer, expected_version: int | None) -> None:
        events = customer.collect_events()
        if not events:
            return
        try:
            self.committer.commit(Write(events))
        except RecordConflictError:
            actual = self._load(customer.id).version
            raise StaleVersion(customer.id, expected_version or customer.version, actual) from None

    def _refuse_to_orphan_merged(self, customer: Customer) -> None:
        """Customers merged into this one are the same person, and hidden behind it: erasing
        only this one would leave their records alive with nothing pointing at them. They
        are erased first (each its own certificate), or unmerged."""
        alive = [
            source
            for source in (m["source_id"] for m in customer.merges)
            if not self._load_without_keys(UUID(source)).is_erased
        ]
        if alive:
            raise MergeRefused(
                f"customers {', '.join(alive)} are merged into {customer.id}: "
                "erase them first (or unmerge them), then this one"
            )

    def _region_of(self, customer: Customer) -> str | None:
        """Phones typed without +CC are read in the customer's own country first."""
        if isinstance(customer.personal, dict):
            for address in customer.personal.get("addresses") or []:
                if address.get("country"):
                    return str(address["country"])
        return self.settings.default_region

    def _purge_derived_copies(self, customer_id: UUID) -> None:
        """Drop every in-memory copy, then every registered derived copy."""
        if self.repository.cache is not None:
            with suppress(KeyError):
                self.repository.cache.get(customer_id, evict=True)
        self.keys.forget(customer_id)
        for purge in self.erasure_purgers:
            purge(customer_id)
