"""The consent methods of ComplianceService: the same service as `ledger consent`
(`ledger.consent.service`), with the API's names, etags and record-level rule."""

from __future__ import annotations

from uuid import UUID

from ledger.api import convert
from ledger.api.customer_access import CustomerAccess
from ledger.api.errors import renamed
from ledger.api.rpc import Call
from ledger.consent.records import ConsentEntry, in_force
from ledger.consent.service import ConsentService, ConsentSource
from ledger.domain.errors import ValidationFailed
from ledger.v1 import compliance_service_pb2 as pb


def _event(entry: ConsentEntry) -> pb.ConsentEvent:
    return pb.ConsentEvent(
        purpose=entry.purpose,
        given=entry.given,
        time=convert.timestamp(entry.at),
        channel=entry.channel,
        form=entry.form,
        proof=entry.proof,
        bundle=list(entry.bundle),
        separate=entry.separate,
        actor=entry.actor,
        version=entry.version,
    )


def _api_field(field: str) -> str:
    """The service's `purpose` / `purpose[1]` are the request's `purposes[0]` / `purposes[1]`."""
    if field == "purpose":
        return "purposes[0]"
    return "purposes" + field.removeprefix("purpose") if field.startswith("purpose[") else field


class ConsentApi:
    def __init__(self, consents: ConsentService, access: CustomerAccess) -> None:
        self.consents = consents
        self.access = access

    def answer(self, customer_id: UUID, changed: bool = False) -> pb.ConsentsResponse:
        history = self.consents.history(customer_id)
        return pb.ConsentsResponse(
            customer=convert.customer_name(customer_id),
            in_force=sorted(key for key, entry in in_force(history).items() if entry.given),
            history=[_event(entry) for entry in history],
            changed=changed,
        )

    def give(self, request: pb.GiveConsentRequest, call: Call) -> pb.ConsentsResponse:
        customer_id = convert.parse_name(request.name)
        expected = convert.parse_etag(request.etag, "etag")
        source = ConsentSource(request.source, request.form, request.proof)
        purposes = list(request.purposes)
        try:  # the input first, then the store
            self.consents.check(purposes, source)
        except ValidationFailed as error:
            raise renamed(error, _api_field) from None
        self.access.load(call, customer_id)
        self.consents.give(
            customer_id,
            purposes,
            source,
            actor=call.principal.name,
            reason=request.reason or None,
            expected_version=expected,
        )
        return self.answer(customer_id, changed=True)

    def withdraw(self, request: pb.WithdrawConsentRequest, call: Call) -> pb.ConsentsResponse:
        customer_id = convert.parse_name(request.name)
        expected = convert.parse_etag(request.etag, "etag")
        self.access.load(call, customer_id)
        changed = self.consents.withdraw(
            customer_id,
            request.purpose,
            channel=request.source,
            actor=call.principal.name,
            reason=request.reason or None,
            expected_version=expected,
        )
        return self.answer(customer_id, changed=changed)

    def list(self, request: pb.ListConsentsRequest, call: Call) -> pb.ConsentsResponse:
        customer_id = convert.parse_name(request.name)
        self.access.load(call, customer_id)
        return self.answer(customer_id)
