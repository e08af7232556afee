"""CustomerService: register, read and change customers, with per-record authorisation.

Each method loads the customer first when the caller's roles reach only some customers (a
`sales` principal: its own), so the record-level rule is checked against stored data, never
against what the request claims.
"""

from __future__ import annotations

from contextlib import suppress
from uuid import UUID, uuid4

import grpc
from eventsourcing.persistence import RecordConflictError

from ledger.api import convert
from ledger.api.api_store import ApiStore
from ledger.api.authz import AccessDenied
from ledger.api.customer_access import CustomerAccess
from ledger.api.errors import ApiError, customer_field, renamed
from ledger.api.rpc import Call
from ledger.application import CustomerLedger
from ledger.crypto_shred.keystore import KeyAlreadyExists
from ledger.domain.errors import CustomerNotFound, ValidationFailed
from ledger.v1 import customer_service_pb2 as pb
from ledger.v1 import resources_pb2

MAX_REQUEST_ID = 128
MAX_REASON = 500


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
        if not request_id:
            try:
                view = self.ledger.register_view(profile, actor=call.principal.name, reason=reason)
            except ValidationFailed as error:
                raise _profile_error(error) from None
            return self.access.respond(call, view)
        return self._create_once(request_id, profile, call, reason)

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
    ) -> resources_pb2.Customer:
        """AIP-155: the first attempt binds the request id to a new customer id; every
        attempt registers under that id, and whichever saves first wins. A retry thus gets
        the customer the first attempt created, as it stood when created (version 1)."""
        principal = call.principal.name
        bound = self.store.reserved(principal, "CreateCustomer", request_id)
        if bound is None or not self._exists(bound):
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
        return self.access.respond(call, view)

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

    # Backed by the projections (issue 4): list with filters and page tokens, duplicate
    # detection, merge and unmerge. For List and FindDuplicates, `call.grant.owner_filter`
    # is the restriction to put into the projection query for owner-limited callers.

    def ListCustomers(self, request: pb.ListCustomersRequest, call: Call) -> object:
        raise ApiError.unimplemented("ListCustomers", "the projections (current view)")

    def MergeCustomers(self, request: pb.MergeCustomersRequest, call: Call) -> object:
        raise ApiError.unimplemented("MergeCustomers", "the projections (merge and unmerge)")

    def UnmergeCustomer(self, request: pb.UnmergeCustomerRequest, call: Call) -> object:
        raise ApiError.unimplemented("UnmergeCustomer", "the projections (merge and unmerge)")

    def FindDuplicates(self, request: pb.FindDuplicatesRequest, call: Call) -> object:
        raise ApiError.unimplemented("FindDuplicates", "the projections (duplicate index)")
