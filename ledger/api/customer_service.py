"""CustomerService: register, read and change customers, with per-record authorisation.

Each method loads the customer first when the caller's roles reach only some customers (a
`sales` principal: its own), so the record-level rule is checked against stored data, never
against what the request claims.

CreateCustomer applies LEDGER_DUPLICATE_POLICY like `ledger register` (see
`ledger.projections.duplicates`): the look-up runs in the calling thread before anything is
written (never inside the group committer), and only among the customers the caller may
see: a `sales` principal's own, so no other owner's customer id is ever named or counted.
`refuse` fails the call (FAILED_PRECONDITION, LIKELY_DUPLICATE) before the request id is
reserved; `warn` creates the customer and names the likely duplicates in the trailing
metadata `ledger-likely-duplicates`; `off` looks nothing up.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any
from uuid import UUID, uuid4

import grpc
from eventsourcing.persistence import RecordConflictError

from ledger.api import convert, list_query, paging
from ledger.api.api_store import ApiStore
from ledger.api.authz import AccessDenied
from ledger.api.customer_access import CustomerAccess
from ledger.api.duplicate_search import find_duplicates
from ledger.api.errors import ApiError, customer_field, renamed
from ledger.api.rpc import Call
from ledger.application import CustomerLedger
from ledger.crypto_shred.keystore import KeyAlreadyExists
from ledger.domain.customer import MERGEABLE_FIELDS
from ledger.domain.errors import CustomerErasedError, CustomerNotFound, ValidationFailed
from ledger.domain.profile import validate_registration
from ledger.projections.dedup import Match
from ledger.projections.queries import MAX_PAGE_SIZE, CustomerRecord
from ledger.projections.wiring import customer_queries, duplicate_queries, runner_of
from ledger.v1 import customer_service_pb2 as pb
from ledger.v1 import resources_pb2
from ledger.views import CustomerView

MAX_REQUEST_ID = 128
MAX_REASON = 500
LIST_DEFAULT = 50
# Trailing metadata of a CreateCustomer that registered a likely duplicate (policy `warn`):
# comma-separated resource names (`customers/ID`), best match first.
LIKELY_DUPLICATES_METADATA = "ledger-likely-duplicates"


def _view(record: CustomerRecord) -> CustomerView:
    return CustomerView(
        id=record.id,
        version=record.version,
        status=record.status,
        personal=record.personal,
        locale=record.locale,
        tags=record.tags,
        owner=record.owner,
        created_at=record.created_at,
        updated_at=record.updated_at,
        verified_at=record.verified_at,
        erased_at=record.erased_at,
        merged_into=str(record.merged_into) if record.merged_into else None,
    )


def _take_fields(request: pb.MergeCustomersRequest) -> list[str]:
    paths = list(request.take_from_source.paths)
    for index, path in enumerate(paths):
        if path not in MERGEABLE_FIELDS:
            raise ApiError.invalid(
                f"take_from_source.paths[{index}]", "not a field a merge can take"
            )
    return paths


def _take_field(field: str) -> str:
    return "take_from_source" if field == "take" else customer_field(field)


def check_request_id(request_id: str, field: str = "request_id") -> str:
    if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise ApiError.invalid(field, f"must be printable text of at most {MAX_REQUEST_ID}")
    return request_id


def reason_of(reason: str) -> str | None:
    return reason or None


def _profile_error(error: ValidationFailed) -> ValidationFailed:
    return renamed(error, customer_field)


class CustomerService:
    def __init__(self, ledger: CustomerLedger, store: ApiStore) -> None:
        self.ledger = ledger
        self.store = store
        self.access = CustomerAccess(ledger)

    def CreateCustomer(
        self, request: pb.CreateCustomerRequest, call: Call
    ) -> resources_pb2.Customer:
        if not request.HasField("customer"):
            raise ApiError.invalid("customer", "required")
        profile = convert.registration_profile(request.customer)
        required_owner = call.grant.new_customer_owner
        if required_owner is not None:
            owner = profile.setdefault("owner", required_owner)
            if owner != required_owner:
                raise AccessDenied("a sales principal registers customers it owns itself")
        request_id = check_request_id(request.request_id)
        reason = reason_of(request.reason)
        duplicates: list[Match] = []
        if request_id:
            customer, duplicates = self._create_once(request_id, profile, call, reason)
        else:

            def screen(validated: dict[str, Any]) -> None:  # refuses before anything is written
                duplicates.extend(self._duplicates_of(validated, call))

            def register(also: Callable[[CustomerView], list[Any]]) -> CustomerView:
                try:
                    return self.ledger.register_view(
                        profile, actor=call.principal.name, reason=reason, also=also, check=screen
                    )
                except ValidationFailed as error:
                    raise _profile_error(error) from None

            customer = self.access.respond_to_command(call, register)
        if duplicates:
            names = ",".join(convert.customer_name(m.customer_id) for m in duplicates)
            call.context.set_trailing_metadata(((LIKELY_DUPLICATES_METADATA, names),))
        return customer

    def _screen(
        self, profile: dict[str, object], call: Call, registering_as: UUID | None = None
    ) -> list[Match]:
        """LEDGER_DUPLICATE_POLICY for a new customer: `refuse` raises `LikelyDuplicate`,
        `warn` returns the likely duplicates. Only the caller's reach is searched (a sales
        principal's own customers): a refusal must not name, or even reveal, a customer
        the caller may not see. Cross-owner duplicates are left to `ledger duplicates`.
        `registering_as`: the id an earlier attempt with the same request id reserved; the
        customer it may be writing right now is not a duplicate of this profile."""
        settings = self.ledger.settings
        if settings.duplicate_policy == "off":
            return []
        try:
            validated = validate_registration(profile, default_region=settings.default_region)
        except ValidationFailed as error:
            raise _profile_error(error) from None
        return self._duplicates_of(validated, call, registering_as)

    def _duplicates_of(
        self, validated: dict[str, Any], call: Call, registering_as: UUID | None = None
    ) -> list[Match]:
        """`_screen` for a profile validated already (by the ledger, on registering)."""
        policy = self.ledger.settings.duplicate_policy
        if policy == "off":
            return []
        return duplicate_queries(self.ledger).check_registration(
            validated,
            policy=policy,
            owner=call.grant.owner_filter,
            exclude=() if registering_as is None else (str(registering_as),),
        )

    def _register(
        self, profile: dict[str, object], call: Call, reason: str | None, customer_id: UUID | None
    ) -> UUID:
        try:
            return self.ledger.register(
                profile, actor=call.principal.name, reason=reason, customer_id=customer_id
            )
        except ValidationFailed as error:
            raise _profile_error(error) from None

    def _create_once(
        self, request_id: str, profile: dict[str, object], call: Call, reason: str | None
    ) -> tuple[resources_pb2.Customer, list[Match]]:
        """AIP-155: the first attempt binds the request id to a new customer id; every
        attempt registers under that id, and whichever saves first wins. A retry thus gets
        the customer the first attempt created, as it stood when created (version 1).

        The duplicate policy is applied before the id is reserved (a refusal leaves no
        reservation behind) and not again once the customer exists: a retry returns it
        without re-checking, hence without the `warn` list (FindDuplicates gives it)."""
        principal = call.principal.name
        duplicates: list[Match] = []
        bound = self.store.reserved(principal, "CreateCustomer", request_id)
        if bound is None or not self._exists(bound):
            duplicates = self._screen(profile, call, registering_as=bound)
            bound = self.store.reserve(principal, "CreateCustomer", request_id, uuid4())
            # An earlier or concurrent attempt may get there first: then it is the answer.
            with suppress(RecordConflictError, KeyAlreadyExists):
                self._register(profile, call, reason, bound)
        try:
            view = self.ledger.as_of(bound, version=1)
        except CustomerNotFound:
            raise ApiError(
                grpc.StatusCode.ABORTED,
                "REQUEST_IN_PROGRESS",
                "another attempt with this request_id is still in progress; retry",
                metadata={"request_id_bound_to": convert.customer_name(bound)},
            ) from None
        call.grant.check_record(str(bound), view.owner)
        return self.access.respond(call, view), duplicates

    def _exists(self, customer_id: UUID) -> bool:
        try:
            self.ledger.get(customer_id)
        except CustomerNotFound:
            return False
        return True

    def GetCustomer(self, request: pb.GetCustomerRequest, call: Call) -> resources_pb2.Customer:
        customer_id = convert.parse_name(request.name)
        view = self.access.load(call, customer_id)
        mask = request.read_mask if request.HasField("read_mask") else None
        return self.access.respond(call, view, mask)

    def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, call: Call
    ) -> resources_pb2.Customer:
        if not request.HasField("customer"):
            raise ApiError.invalid("customer", "required")
        customer_id = convert.parse_name(request.customer.name, "customer.name")
        expected = convert.parse_etag(request.customer.etag, "customer.etag")
        mask = request.update_mask if request.HasField("update_mask") else None
        changes = convert.update_changes(request.customer, mask)
        self.access.load(call, customer_id)
        try:
            self.ledger.change(
                customer_id,
                changes,
                actor=call.principal.name,
                expected_version=expected,
                reason=reason_of(request.reason),
            )
        except ValidationFailed as error:
            raise _profile_error(error) from None
        return self.access.respond(call, self.ledger.get(customer_id))

    def AssignOwner(self, request: pb.AssignOwnerRequest, call: Call) -> resources_pb2.Customer:
        customer_id = convert.parse_name(request.name)
        expected = convert.parse_etag(request.etag, "etag")
        self.access.load(call, customer_id)
        self.ledger.assign_owner(
            customer_id,
            request.owner,
            actor=call.principal.name,
            expected_version=expected,
            reason=reason_of(request.reason),
        )
        return self.access.respond(call, self.ledger.get(customer_id))

    def MarkVerified(self, request: pb.MarkVerifiedRequest, call: Call) -> resources_pb2.Customer:
        customer_id = convert.parse_name(request.name)
        expected = convert.parse_etag(request.etag, "etag")
        self.access.load(call, customer_id)
        self.ledger.mark_verified(
            customer_id,
            actor=call.principal.name,
            expected_version=expected,
            reason=reason_of(request.reason),
        )
        return self.access.respond(call, self.ledger.get(customer_id))

    def ListCustomers(
        self, request: pb.ListCustomersRequest, call: Call
    ) -> pb.ListCustomersResponse:
        """AIP-132 over the current view. A caller limited to its own customers (sales) gets
        `owner = principal` put into the query itself, so pages stay full and nothing about
        other owners' customers (not even their number) leaks; a filter naming another
        owner is refused (PERMISSION_DENIED, recorded) rather than answered empty, so the
        attempt shows up in the access log."""
        query = list_query.parse_filter(request.filter, show_erased=request.show_erased)
        order_by, descending = list_query.parse_order(request.order_by)
        size = paging.page_size(request.page_size, default=LIST_DEFAULT, maximum=MAX_PAGE_SIZE)
        mask = request.read_mask if request.HasField("read_mask") else None
        if mask is not None and mask.paths:
            convert.apply_read_mask(resources_pb2.Customer(), mask)  # refuse a bad mask early
        if len(request.page_token) > paging.MAX_TOKEN * 2:
            raise ApiError.invalid("page_token", "not a page token of this API")
        owner = call.grant.owner_filter
        if owner is not None:
            if query.filters.owner not in (None, owner):
                raise AccessDenied("a sales principal lists only the customers it owns")
            query = list_query.restricted_to(query, owner)
        if self.ledger.settings.projection_mode == "inline":
            runner_of(self.ledger).catch_up_quietly()  # read what this process just wrote
        page = customer_queries(self.ledger).list_customers(
            query.filters,
            order_by=order_by,
            descending=descending,
            page_size=size,
            page_token=request.page_token or None,
        )
        records = [r for r in page.records if not (query.hide_merged and r.merged_into)]
        for record in records:  # the query is restricted; this only guards against a bug
            call.grant.check_record(str(record.id), record.owner)
        customers = self.access.respond_many(call, [_view(r) for r in records], mask)
        return pb.ListCustomersResponse(
            customers=customers, next_page_token=page.next_page_token or ""
        )

    def MergeCustomers(
        self, request: pb.MergeCustomersRequest, call: Call
    ) -> resources_pb2.Customer:
        """Both customers are loaded under the record-level rule (a sales principal merges
        only customers it owns, both of them). The etags are checked by the ledger in the
        same step as the write; a retry with the same `request_id` after the merge was done
        returns the survivor instead of FAILED_PRECONDITION."""
        target_id = convert.parse_name(request.name)
        source_id = convert.parse_name(request.source, "source")
        expected = convert.parse_etag(request.etag, "etag")
        source_expected = convert.parse_etag(request.source_etag, "source_etag")
        take = _take_fields(request)
        request_id = check_request_id(request.request_id)
        if target_id == source_id:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "MERGE_INTO_ITSELF",
                "a customer cannot be merged into itself",
                metadata={"customer": convert.customer_name(target_id)},
            )
        self.access.load(call, target_id)
        source = self.access.load(call, source_id)
        if request_id:
            principal = call.principal.name
            bound = self.store.reserve(principal, "MergeCustomers", request_id, source_id)
            if bound != source_id:
                raise ApiError.invalid("request_id", "already used for another merge")
            if source.merged_into == str(target_id):
                return self.access.respond(call, self.ledger.get(target_id))
        try:
            self.ledger.merge(
                target_id,
                source_id,
                actor=call.principal.name,
                take=take,
                reason=reason_of(request.reason),
                expected_version=expected,
                expected_source_version=source_expected,
            )
        except ValidationFailed as error:
            raise renamed(error, _take_field) from None
        return self.access.respond(call, self.ledger.get(target_id))

    def UnmergeCustomer(
        self, request: pb.UnmergeCustomerRequest, call: Call
    ) -> resources_pb2.Customer:
        """Restores the merged customer `name` and the survivor's earlier values; the
        caller must reach both (sales: own both)."""
        source_id = convert.parse_name(request.name)
        expected = convert.parse_etag(request.etag, "etag")
        source = self.access.load(call, source_id)
        if source.merged_into is None:
            if source.is_erased:
                raise CustomerErasedError(source_id)
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "NOT_MERGED",
                f"customer {source_id} is not merged into another customer",
                metadata={"customer": convert.customer_name(source_id)},
            )
        self.access.load(call, UUID(source.merged_into))
        self.ledger.unmerge(
            source_id,
            actor=call.principal.name,
            reason=reason_of(request.reason),
            expected_target_version=expected,
        )
        return self.access.respond(call, self.ledger.get(source_id))

    def FindDuplicates(
        self, request: pb.FindDuplicatesRequest, call: Call
    ) -> pb.FindDuplicatesResponse:
        return find_duplicates(call, request, self.ledger)

    def DismissDuplicate(
        self, request: pb.DismissDuplicateRequest, call: Call
    ) -> resources_pb2.Customer:
        """Both customers are loaded under the record-level rule (a sales principal
        dismisses only pairs it owns, both of them)."""
        first = convert.parse_name(request.name)
        second = convert.parse_name(request.other, "other")
        if first == second:
            raise ApiError.invalid("other", "must name another customer than name")
        self.access.load(call, first)
        self.access.load(call, second)
        self.ledger.dismiss_duplicate(
            first, second, actor=call.principal.name, reason=reason_of(request.reason)
        )
        return self.access.respond(call, self.ledger.get(first))
