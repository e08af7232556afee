"""ComplianceService: erasure with a signed certificate, and the subject-access export.

The export is one JSON document holding everything the ledger keeps about one customer: the
current profile, every event of its history, the non-personal metadata (its key's id and
state), its consents, purposes and lawful bases, categories, retention dates and the
recipients of its data (`ledger.consent.subject_access`; format in docs/subject-access.md).
It is built from the same read views as every other response, so after erasure it
holds exactly what survives erasure — the non-personal data — and nothing else.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ledger.api import convert
from ledger.api.api_store import ApiStore
from ledger.api.authz import AccessDenied
from ledger.api.consent_api import ConsentApi
from ledger.api.customer_access import CustomerAccess
from ledger.api.errors import ApiError
from ledger.api.rpc import Call
from ledger.application import CustomerLedger
from ledger.consent.service import ConsentService
from ledger.consent.subject_access import (
    EXPORT_FORMAT,
    personal_fields_in,
    subject_access_document,
    subject_access_text,
)
from ledger.crypto_shred.category_erasure import destroy_categories
from ledger.policy.classification import FIELDS
from ledger.policy.handover import hand_over
from ledger.policy.log import PolicyLog
from ledger.policy.source import PolicySource, policy_for
from ledger.v1 import compliance_service_pb2 as pb

__all__ = ["EXPORT_FORMAT", "ComplianceService"]
MAX_LEGAL_BASIS = 500


class ComplianceService:
    def __init__(
        self,
        ledger: CustomerLedger,
        store: ApiStore | None = None,
        policy: PolicySource | None = None,
    ) -> None:
        """`store`: revocations (HandoverCustomers); `policy`: where the data policy in
        force comes from (default: `policy_for(ledger)`)."""
        self.ledger = ledger
        self.access = CustomerAccess(ledger)
        self.store = store
        self.policy = policy if policy is not None else policy_for(ledger)
        self.consents = ConsentApi(ConsentService(ledger, self.policy), self.access)

    def EraseCustomer(
        self, request: pb.EraseCustomerRequest, call: Call
    ) -> pb.EraseCustomerResponse:
        customer_id = convert.parse_name(request.name)
        if not request.legal_basis.strip():
            raise ApiError.invalid("legal_basis", "required, e.g. 'GDPR Art. 17(1)(a)'")
        if len(request.legal_basis) > MAX_LEGAL_BASIS:
            raise ApiError.invalid("legal_basis", f"at most {MAX_LEGAL_BASIS} characters")
        if not request.reason.strip():
            raise ApiError.invalid("reason", "required: a non-personal reason code")
        self.access.load(call, customer_id)
        if request.categories:
            signed = destroy_categories(
                self.ledger,
                customer_id,
                list(request.categories),
                actor=call.principal.name,
                legal_basis=request.legal_basis,
                reason=request.reason,
            )
        else:
            signed = self.ledger.erase(
                customer_id,
                actor=call.principal.name,
                legal_basis=request.legal_basis,
                reason=request.reason,
            )
        body = signed.certificate
        return pb.EraseCustomerResponse(
            certificate=pb.ErasureCertificate(
                customer=convert.customer_name(body.customer_id),
                erase_time=convert.timestamp(datetime.fromisoformat(body.erased_at)),
                actor=body.actor,
                legal_basis=body.legal_basis,
                reason=body.reason,
                key_id=body.key_id,
                last_version=body.last_version,
                ledger_key_id=body.ledger_key_id,
                categories=body.category_list,
            ),
            signature=signed.signature,
            certificate_json=signed.to_json(),
        )

    def ExportCustomerData(
        self, request: pb.ExportCustomerDataRequest, call: Call
    ) -> pb.ExportCustomerDataResponse:
        customer_id = convert.parse_name(request.name)
        view = self.access.load(call, customer_id)
        if not call.grant.may_read_personal(view.owner):  # no such role today; fail closed
            raise AccessDenied("the caller's roles cannot export personal data")
        now = datetime.now(UTC)
        document = subject_access_document(self.ledger, customer_id, self.policy, now)
        call.record_access([convert.customer_name(customer_id)], personal_fields_in(document))
        text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        return pb.ExportCustomerDataResponse(
            customer=convert.customer_name(customer_id),
            export_time=convert.timestamp(now),
            content_type="application/json",
            document=text.encode("utf-8"),
            text=subject_access_text(document),
        )

    def GetPolicy(self, request: pb.GetPolicyRequest, call: Call) -> pb.GetPolicyResponse:
        current = PolicyLog(self.ledger).latest()
        policy = current.policy
        response = pb.GetPolicyResponse(
            version=current.version,
            policy_name=policy.name,
            digest=current.digest,
            actor=current.actor or "",
            purposes=[
                pb.PolicyPurpose(
                    key=purpose.key,
                    display_name=purpose.name,
                    lawful_basis=purpose.lawful_basis.value,
                    categories=list(purpose.categories),
                    separate_consent=purpose.separate_consent,
                )
                for purpose in policy.purposes
            ],
            retention_rules=[
                pb.RetentionRule(
                    category=rule.category,
                    keep_for_days=rule.keep_for_days,
                    after=rule.after.value,
                    why=rule.why,
                )
                for rule in policy.retention
            ],
            classification=[
                pb.FieldClassification(
                    field=entry.field,
                    category=entry.category,
                    sensitivity=entry.sensitivity.value,
                    description=entry.description,
                )
                for entry in FIELDS
            ],
            policy_json=json.dumps(policy.as_data(), sort_keys=True, ensure_ascii=False),
            apply_time=convert.timestamp(current.applied_at),
        )
        return response

    def HandoverCustomers(
        self, request: pb.HandoverCustomersRequest, call: Call
    ) -> pb.HandoverCustomersResponse:
        if self.store is None:
            raise ApiError.unimplemented("HandoverCustomers", "a server with its API store")
        result = hand_over(
            self.ledger,
            self.store,
            request.from_principal,
            request.to_principal,
            actor=call.principal.name,
            reason=request.reason,
        )
        return pb.HandoverCustomersResponse(
            handover_id=str(result.handover_id),
            customers=[convert.customer_name(c) for c in result.customer_ids],
            revoke_time=convert.timestamp(result.revoked_at),
        )

    def GiveConsent(self, request: pb.GiveConsentRequest, call: Call) -> pb.ConsentsResponse:
        return self.consents.give(request, call)

    def WithdrawConsent(
        self, request: pb.WithdrawConsentRequest, call: Call
    ) -> pb.ConsentsResponse:
        return self.consents.withdraw(request, call)

    def ListConsents(self, request: pb.ListConsentsRequest, call: Call) -> pb.ConsentsResponse:
        return self.consents.list(request, call)
