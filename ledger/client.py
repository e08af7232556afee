"""A small typed client for the ledger's gRPC API.

    with LedgerClient("127.0.0.1:50051", token=token) as client:
        customer = client.create_customer(Customer(given_name="Ada", ...), request_id=rid)
        client.update_customer(customer.name, Customer(tags=["vip"]), etag=customer.etag)

Every call sends the bearer token (and the declared purpose, for the access log). With TLS
files it connects over TLS, presenting a client certificate for mutual TLS when given one.
The raw stubs stay available (`client.customers`, `.audit`, `.compliance`) for anything the
helpers do not cover; errors are `grpc.RpcError`, and `error_details` unpacks the rich
`google.rpc.Status` details.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ledger.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    compliance_service_pb2,
    compliance_service_pb2_grpc,
    customer_service_pb2,
    customer_service_pb2_grpc,
    resources_pb2,
)

Customer = resources_pb2.Customer
Address = resources_pb2.Address
LedgerEvent = resources_pb2.LedgerEvent
LIKELY_DUPLICATES_METADATA = "ledger-likely-duplicates"


class CreatedCustomer(NamedTuple):
    """What `create_customer_checked` returns: the new customer and the resource names of
    the likely duplicates the server warned about (LEDGER_DUPLICATE_POLICY=warn), best
    first; empty when none were found, under `off`, or on a retry with the same request_id
    (the check ran with the first attempt only)."""

    customer: resources_pb2.Customer
    likely_duplicates: list[str]


def _name(customer: str) -> str:
    """Accept a bare id or a resource name."""
    return customer if customer.startswith("customers/") else f"customers/{customer}"


class LedgerClient:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        purpose: str | None = None,
        root_certificates: bytes | Path | None = None,
        client_certificate: bytes | Path | None = None,
        client_key: bytes | Path | None = None,
        server_name: str | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        def read(value: bytes | Path | None) -> bytes | None:
            return value.read_bytes() if isinstance(value, Path) else value

        options: list[tuple[str, Any]] = []
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if root_certificates is not None or client_certificate is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(root_certificates),
                private_key=read(client_key),
                certificate_chain=read(client_certificate),
            )
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.metadata: tuple[tuple[str, str], ...] = tuple(
            item
            for item in (
                ("authorization", f"Bearer {token}") if token else None,
                ("ledger-purpose", purpose) if purpose else None,
            )
            if item is not None
        )
        self.timeout = timeout
        self.customers = customer_service_pb2_grpc.CustomerServiceStub(self.channel)
        self.audit = audit_service_pb2_grpc.AuditServiceStub(self.channel)
        self.compliance = compliance_service_pb2_grpc.ComplianceServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def call_options(self) -> dict[str, Any]:
        """Keyword arguments for a raw stub call (metadata and timeout)."""
        return {"metadata": self.metadata, "timeout": self.timeout}

    # CustomerService ------------------------------------------------------------------------

    def _pages(self, call: Callable[..., Any], request: Callable[[str], Any]) -> Iterator[Any]:
        """The responses of a paged list method (AIP-158), asking with each page's
        `next_page_token` until it is empty; `request(token)` builds each request."""
        token = ""
        while True:
            response = call(request(token), **self.call_options)
            yield response
            token = response.next_page_token
            if not token:
                return

    def create_customer(
        self, customer: resources_pb2.Customer, *, request_id: str = "", reason: str = ""
    ) -> resources_pb2.Customer:
        return self.create_customer_checked(customer, request_id=request_id, reason=reason).customer

    def create_customer_checked(
        self, customer: resources_pb2.Customer, *, request_id: str = "", reason: str = ""
    ) -> CreatedCustomer:
        """`create_customer`, also returning the likely duplicates the server found. Under
        LEDGER_DUPLICATE_POLICY=refuse a likely duplicate fails the call instead
        (FAILED_PRECONDITION, reason LIKELY_DUPLICATE: see `error_details`)."""
        request = customer_service_pb2.CreateCustomerRequest(
            customer=customer, request_id=request_id, reason=reason
        )
        response, call = self.customers.CreateCustomer.with_call(request, **self.call_options)
        listed = [
            value
            for key, value in call.trailing_metadata() or ()
            if key == LIKELY_DUPLICATES_METADATA and isinstance(value, str)
        ]
        names = [name for value in listed for name in value.split(",") if name]
        return CreatedCustomer(response, names)

    def get_customer(
        self, customer: str, *, read_mask: Sequence[str] = ()
    ) -> resources_pb2.Customer:
        request = customer_service_pb2.GetCustomerRequest(
            name=_name(customer), read_mask=field_mask_pb2.FieldMask(paths=list(read_mask))
        )
        return self.customers.GetCustomer(request, **self.call_options)

    def update_customer(
        self,
        customer: str,
        changes: resources_pb2.Customer,
        *,
        update_mask: Sequence[str] | None = None,
        etag: str = "",
        reason: str = "",
    ) -> resources_pb2.Customer:
        """Changes the fields in `update_mask` (all set fields of `changes` when None)."""
        body = resources_pb2.Customer()
        body.CopyFrom(changes)
        body.name, body.etag = _name(customer), etag
        request = customer_service_pb2.UpdateCustomerRequest(customer=body, reason=reason)
        if update_mask is not None:
            request.update_mask.paths.extend(update_mask)
        return self.customers.UpdateCustomer(request, **self.call_options)

    def assign_owner(
        self, customer: str, owner: str, *, etag: str = "", reason: str = ""
    ) -> resources_pb2.Customer:
        request = customer_service_pb2.AssignOwnerRequest(
            name=_name(customer), owner=owner, etag=etag, reason=reason
        )
        return self.customers.AssignOwner(request, **self.call_options)

    def mark_verified(
        self, customer: str, *, etag: str = "", reason: str = ""
    ) -> resources_pb2.Customer:
        request = customer_service_pb2.MarkVerifiedRequest(
            name=_name(customer), etag=etag, reason=reason
        )
        return self.customers.MarkVerified(request, **self.call_options)

    def list_customers(
        self,
        *,
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
        read_mask: Sequence[str] = (),
        show_erased: bool = False,
    ) -> Iterator[resources_pb2.Customer]:
        """Every customer matching `filter` (AIP-160, e.g. 'owner = "sales.uk" AND
        tags:"vip"'), in `order_by` order, following page tokens."""
        for page in self.list_customer_pages(
            filter=filter,
            order_by=order_by,
            page_size=page_size,
            read_mask=read_mask,
            show_erased=show_erased,
        ):
            yield from page.customers

    def list_customer_pages(
        self,
        *,
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
        read_mask: Sequence[str] = (),
        show_erased: bool = False,
    ) -> Iterator[customer_service_pb2.ListCustomersResponse]:
        """The raw pages of a listing (for callers that keep the page tokens themselves)."""
        return self._pages(
            self.customers.ListCustomers,
            lambda token: customer_service_pb2.ListCustomersRequest(
                filter=filter,
                order_by=order_by,
                page_size=page_size,
                page_token=token,
                read_mask=field_mask_pb2.FieldMask(paths=list(read_mask)),
                show_erased=show_erased,
            ),
        )

    def merge_customers(
        self,
        survivor: str,
        source: str,
        *,
        etag: str = "",
        source_etag: str = "",
        take_from_source: Sequence[str] = (),
        reason: str = "",
        request_id: str = "",
    ) -> resources_pb2.Customer:
        """Merge `source` into `survivor`; returns the survivor."""
        request = customer_service_pb2.MergeCustomersRequest(
            name=_name(survivor),
            source=_name(source),
            etag=etag,
            source_etag=source_etag,
            reason=reason,
            request_id=request_id,
            take_from_source=field_mask_pb2.FieldMask(paths=list(take_from_source)),
        )
        return self.customers.MergeCustomers(request, **self.call_options)

    def unmerge_customer(
        self, customer: str, *, etag: str = "", reason: str = ""
    ) -> resources_pb2.Customer:
        """Undo the merge of `customer` (`etag`: the survivor's, as read); returns it."""
        request = customer_service_pb2.UnmergeCustomerRequest(
            name=_name(customer), etag=etag, reason=reason
        )
        return self.customers.UnmergeCustomer(request, **self.call_options)

    def dismiss_duplicate(
        self, customer: str, other: str, *, reason: str = ""
    ) -> resources_pb2.Customer:
        """Record that `customer` and `other` are different people; returns `customer`."""
        request = customer_service_pb2.DismissDuplicateRequest(
            name=_name(customer), other=_name(other), reason=reason
        )
        return self.customers.DismissDuplicate(request, **self.call_options)

    def find_duplicates(
        self,
        candidate: resources_pb2.Customer | None = None,
        *,
        customer: str | None = None,
        min_score: float = 0.0,
        page_size: int = 0,
    ) -> list[customer_service_pb2.DuplicateMatch]:
        """Likely duplicates, best first, of a record not yet stored (`candidate`) or of a
        stored `customer`; the first page (`page_size` 0: the server's default)."""
        request = customer_service_pb2.FindDuplicatesRequest(
            min_score=min_score, page_size=page_size
        )
        if customer is not None:
            request.name = _name(customer)
        elif candidate is not None:
            request.candidate.CopyFrom(candidate)
        return list(self.customers.FindDuplicates(request, **self.call_options).matches)

    # AuditService -----------------------------------------------------------------------------

    def stream_events(
        self,
        start_position: int = 1,
        *,
        follow: bool = False,
        event_types: Iterable[str] = (),
    ) -> Iterator[resources_pb2.LedgerEvent]:
        """The log from `start_position`, one event at a time (batched on the wire)."""
        request = audit_service_pb2.StreamEventsRequest(
            start_position=start_position, follow=follow, event_types=list(event_types)
        )
        for response in self.audit.StreamEvents(request, metadata=self.metadata):
            yield from response.events

    def list_customer_events(self, customer: str) -> Iterator[resources_pb2.LedgerEvent]:
        """Every event of one customer, following page tokens."""
        for page in self._pages(
            self.audit.ListCustomerEvents,
            lambda token: audit_service_pb2.ListCustomerEventsRequest(
                parent=_name(customer), page_size=500, page_token=token
            ),
        ):
            yield from page.events

    def get_customer_as_of(
        self, customer: str, *, version: int | None = None, at: datetime | None = None
    ) -> resources_pb2.Customer:
        request = audit_service_pb2.GetCustomerAsOfRequest(name=_name(customer))
        if version is not None:
            request.version = version
        if at is not None:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(at)
            request.read_time.CopyFrom(stamp)
        return self.audit.GetCustomerAsOf(request, **self.call_options)

    def get_field_history(self, customer: str, field: str) -> list[audit_service_pb2.FieldChange]:
        pages = self._pages(
            self.audit.GetFieldHistory,
            lambda token: audit_service_pb2.GetFieldHistoryRequest(
                name=_name(customer), field=field, page_size=500, page_token=token
            ),
        )
        return [change for page in pages for change in page.changes]

    def get_tree_head(self, tree_size: int = 0) -> audit_service_pb2.TreeHead:
        """A signed tree head (0: the latest; the server signs the log as it stands first)."""
        request = audit_service_pb2.GetTreeHeadRequest(tree_size=tree_size)
        return self.audit.GetTreeHead(request, **self.call_options)

    def get_inclusion_proof(
        self, position: int = 0, *, leaf_index: int | None = None, tree_size: int = 0
    ) -> audit_service_pb2.GetInclusionProofResponse:
        """The proof that the event at `position` (or leaf `leaf_index`) is in the signed
        tree of `tree_size` (0: the latest). Check it with `inclusion_document`."""
        request = audit_service_pb2.GetInclusionProofRequest(position=position, tree_size=tree_size)
        if leaf_index is not None:
            request.leaf_index = leaf_index
        return self.audit.GetInclusionProof(request, **self.call_options)

    def get_consistency_proof(
        self, first_tree_size: int, second_tree_size: int = 0
    ) -> audit_service_pb2.GetConsistencyProofResponse:
        """The proof that the signed tree of `second_tree_size` (0: the latest) extends the
        one of `first_tree_size`. Check it with `consistency_document`."""
        request = audit_service_pb2.GetConsistencyProofRequest(
            first_tree_size=first_tree_size, second_tree_size=second_tree_size
        )
        return self.audit.GetConsistencyProof(request, **self.call_options)

    def list_access_log(
        self, filter: str = "", *, page_size: int = 500, read_mask: Sequence[str] = ()
    ) -> Iterator[audit_service_pb2.AccessRecord]:
        """Every access record matching `filter` (AIP-160, e.g. `principal = "sales.uk"`,
        `customer = "customers/{id}"`, `outcome = DENIED`), oldest first, following tokens."""
        for page in self._pages(
            self.audit.ListAccessLog,
            lambda token: audit_service_pb2.ListAccessLogRequest(
                filter=filter,
                page_size=page_size,
                page_token=token,
                read_mask=field_mask_pb2.FieldMask(paths=list(read_mask)),
            ),
        ):
            yield from page.records

    def list_access_alerts(
        self, filter: str = "", *, page_size: int = 500
    ) -> Iterator[audit_service_pb2.AccessAlert]:
        """Every read-rate alert (optionally `principal = "…"`), oldest first."""
        for page in self._pages(
            self.audit.ListAccessAlerts,
            lambda token: audit_service_pb2.ListAccessAlertsRequest(
                filter=filter, page_size=page_size, page_token=token
            ),
        ):
            yield from page.alerts

    # ComplianceService ------------------------------------------------------------------------

    def erase_customer(
        self,
        customer: str,
        *,
        legal_basis: str,
        reason: str,
        categories: Sequence[str] = (),
    ) -> compliance_service_pb2.EraseCustomerResponse:
        """`categories`: destroy only these data categories (empty: the whole customer)."""
        request = compliance_service_pb2.EraseCustomerRequest(
            name=_name(customer), legal_basis=legal_basis, reason=reason, categories=categories
        )
        return self.compliance.EraseCustomer(request, **self.call_options)

    def export_customer_data(self, customer: str) -> bytes:
        """The portable JSON document (UTF-8 bytes)."""
        request = compliance_service_pb2.ExportCustomerDataRequest(name=_name(customer))
        return self.compliance.ExportCustomerData(request, **self.call_options).document

    def get_policy(self) -> compliance_service_pb2.GetPolicyResponse:
        request = compliance_service_pb2.GetPolicyRequest()
        return self.compliance.GetPolicy(request, **self.call_options)

    def handover_customers(
        self, from_principal: str, to_principal: str, *, reason: str
    ) -> compliance_service_pb2.HandoverCustomersResponse:
        request = compliance_service_pb2.HandoverCustomersRequest(
            from_principal=from_principal, to_principal=to_principal, reason=reason
        )
        return self.compliance.HandoverCustomers(request, **self.call_options)

    def give_consent(
        self,
        customer: str,
        purposes: list[str],
        *,
        source: str,
        form: str = "",
        proof: str = "",
        reason: str = "",
        etag: str = "",
    ) -> compliance_service_pb2.ConsentsResponse:
        request = compliance_service_pb2.GiveConsentRequest(
            name=_name(customer),
            purposes=purposes,
            source=source,
            form=form,
            proof=proof,
            reason=reason,
            etag=etag,
        )
        return self.compliance.GiveConsent(request, **self.call_options)

    def withdraw_consent(
        self, customer: str, purpose: str, *, source: str, reason: str = "", etag: str = ""
    ) -> compliance_service_pb2.ConsentsResponse:
        request = compliance_service_pb2.WithdrawConsentRequest(
            name=_name(customer), purpose=purpose, source=source, reason=reason, etag=etag
        )
        return self.compliance.WithdrawConsent(request, **self.call_options)

    def list_consents(self, customer: str) -> compliance_service_pb2.ConsentsResponse:
        request = compliance_service_pb2.ListConsentsRequest(name=_name(customer))
        return self.compliance.ListConsents(request, **self.call_options)


# Proof documents for the standalone checker -------------------------------------------------
# `ledger/audit/client_check.py` checks JSON documents with the ledger's public key alone; these
# turn the API's answers into them, so a client need trust nothing the server says.

TREE_HEAD_TYPE = "ledger.tree-head.v1"


def tree_head_document(head: audit_service_pb2.TreeHead) -> dict[str, Any]:
    """A signed tree head as `client_check.verify_tree_head` takes it."""
    timestamp_ms = head.sign_time.seconds * 1000 + head.sign_time.nanos // 1_000_000
    return {
        "type": TREE_HEAD_TYPE,
        "tree_size": head.tree_size,
        "root_hash": head.root_hash.hex(),
        "timestamp_ms": timestamp_ms,
        "key_id": head.key_id,
        "signature": base64.b64encode(head.signature).decode("ascii"),
    }


def inclusion_document(proof: audit_service_pb2.GetInclusionProofResponse) -> dict[str, Any]:
    """An inclusion proof as `client_check.check_inclusion_document` takes it."""
    return {
        "type": "ledger.inclusion-proof.v1",
        "leaf_index": proof.leaf_index,
        "position": proof.position,
        "leaf": base64.b64encode(proof.leaf).decode("ascii"),
        "leaf_hash": proof.leaf_hash.hex(),
        "tree_size": proof.tree_size,
        "proof": [h.hex() for h in proof.hashes],
        "tree_head": tree_head_document(proof.tree_head),
    }


def consistency_document(
    proof: audit_service_pb2.GetConsistencyProofResponse,
) -> dict[str, Any]:
    """A consistency proof as `client_check.check_consistency_document` takes it."""
    return {
        "type": "ledger.consistency-proof.v1",
        "old_size": proof.first_tree_size,
        "new_size": proof.second_tree_size,
        "proof": [h.hex() for h in proof.hashes],
        "old_tree_head": tree_head_document(proof.first_tree_head),
        "new_tree_head": tree_head_document(proof.second_tree_head),
    }


def error_details(error: grpc.RpcError) -> dict[str, Any]:
    """The rich details of a failed call: `reason` and `metadata` (ErrorInfo) and
    `field_violations` ({field: description}, BadRequest)."""
    details: dict[str, Any] = {"reason": "", "metadata": {}, "field_violations": {}}
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return details
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if packed.Unpack(info):
            details["reason"], details["metadata"] = info.reason, dict(info.metadata)
        elif packed.Unpack(bad):
            details["field_violations"].update(
                {v.field: v.description for v in bad.field_violations}
            )
    return details
