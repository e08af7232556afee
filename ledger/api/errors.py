"""Every error the API returns, as a `google.rpc.Status` with details (AIP-193).

Each status carries an `ErrorInfo` (a fixed UPPER_SNAKE reason, the domain "ledger", and
non-personal metadata such as customer ids and versions); validation failures add a
`BadRequest` with one field violation per bad field, named by its path in the request
(`customer.emails[1]`, `customer.external_ids["CRM"]`). No message ever repeats an input
value: inputs are personal data and errors reach logs.

Bad input never turns into INTERNAL: everything the domain refuses maps to a precise code
here, and INTERNAL is left for bugs (logged with an id the caller can quote).
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
from collections.abc import Callable, Mapping

import grpc
import psycopg
from eventsourcing.persistence import PersistenceError, RecordConflictError
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ledger.api.authz import AccessDenied
from ledger.api.tokens import TokenError
from ledger.audit.proofs import ProofUnavailable
from ledger.audit.storage import AuditStoreError
from ledger.audit.tree_heads import PublicationError, RefusedToSign
from ledger.crypto_shred.journal import JournalWriteFailed
from ledger.crypto_shred.keyring import KeyMissing
from ledger.crypto_shred.keystore import KeyStoreError, KeyStoreLost
from ledger.crypto_shred.mapper import SealError
from ledger.domain.errors import (
    ConcurrentChange,
    CustomerErasedError,
    CustomerMergedError,
    CustomerNotFound,
    CustomerOnHold,
    FieldViolation,
    HistoryNotFound,
    HoldRefused,
    LikelyDuplicate,
    MergeRefused,
    StaleVersion,
    ValidationFailed,
)
from ledger.domain.profile import EXTERNAL_ID_PREFIX, PERSONAL_FIELDS, PUBLIC_FIELDS
from ledger.projections.row_mac import ProjectionRowTampered

log = logging.getLogger("ledger.api")

# What a store raises when it cannot be reached or goes away mid-call (connection lost,
# server restarting or shutting down, pool exhausted, SQLite busy): nothing the caller did
# wrong, and retrying is safe (commands are idempotent with a request_id, or wrote nothing).
STORE_UNAVAILABLE = (
    PersistenceError,  # the event-sourcing library's wrapping of every driver error
    psycopg.OperationalError,  # includes AdminShutdown, pool timeouts
    psycopg.InterfaceError,  # "the connection is closed"
    sqlite3.OperationalError,  # "database is locked"
    KeyStoreError,
)

DOMAIN = "ledger"
CUSTOMER_TYPE = "ledger.internal/Customer"


class ApiError(Exception):
    """An error decided by the API layer itself (bad names, tokens, unimplemented methods)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
        details: list[Message] | None = None,
    ) -> None:
        self.code = code
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations or [])
        self.details = list(details or [])
        super().__init__(message)

    @classmethod
    def invalid(cls, field: str, reason: str) -> ApiError:
        return cls(
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            f"invalid input: {field}: {reason}",
            violations=[FieldViolation(field, reason)],
        )

    @classmethod
    def unimplemented(cls, method: str, arrives_with: str) -> ApiError:
        return cls(
            grpc.StatusCode.UNIMPLEMENTED,
            "NOT_YET_AVAILABLE",
            f"{method} is not available yet: it arrives with {arrives_with}",
            metadata={"method": method},
        )


# Field paths ------------------------------------------------------------------------------

_ROOT = re.compile(r"[a-z_]+")
_PROFILE = frozenset({*PERSONAL_FIELDS, *PUBLIC_FIELDS, "owner"})


def customer_field(field: str, prefix: str = "customer") -> str:
    """Map a domain violation's field to its path in a request carrying a `Customer`:
    `emails[1]` -> `customer.emails[1]`, `external_id:CRM` and `external_ids.CRM` ->
    `customer.external_ids["CRM"]`; `profile`/`changes` (the whole input) -> `customer`."""
    if field.startswith(EXTERNAL_ID_PREFIX):
        return f'{prefix}.external_ids["{field[len(EXTERNAL_ID_PREFIX) :]}"]'
    if field.startswith("external_ids."):
        return f'{prefix}.external_ids["{field[len("external_ids.") :]}"]'
    if field in ("profile", "changes"):
        return prefix
    root = _ROOT.match(field)
    if root and root.group(0) in _PROFILE:
        return f"{prefix}.{field}"
    return field


def renamed(error: ValidationFailed, rename: Callable[[str], str]) -> ValidationFailed:
    return ValidationFailed([FieldViolation(rename(v.field), v.reason) for v in error.violations])


# Status building ----------------------------------------------------------------------------


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _status(
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
    extra: list[Message] | None = None,
) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=dict(metadata or {}))
    details = [_pack(info), *(_pack(m) for m in extra or [])]
    rpc_code = getattr(code_pb2, code.name)
    return status_pb2.Status(code=rpc_code, message=message, details=details)


def _bad_request(violations: list[FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.reason)
            for v in violations
        ]
    )


def _resource(customer_id: object) -> error_details_pb2.ResourceInfo:
    return error_details_pb2.ResourceInfo(
        resource_type=CUSTOMER_TYPE, resource_name=f"customers/{customer_id}"
    )


def _likely_duplicate(error: LikelyDuplicate) -> status_pb2.Status:
    """CreateCustomer refused under LEDGER_DUPLICATE_POLICY=refuse. The servicer searched
    only customers the caller may see, so every id named here is one it can read."""
    names = [f"customers/{customer_id}" for customer_id, _ in error.matches]
    failure = error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type="LIKELY_DUPLICATE", subject=name, description=f"match score {score:.4f}"
            )
            for name, (_, score) in zip(names, error.matches, strict=True)
        ]
    )
    metadata = {
        "likely_duplicates": ",".join(names),
        "scores": ",".join(f"{score:.4f}" for _, score in error.matches),
    }
    return _status(
        grpc.StatusCode.FAILED_PRECONDITION, "LIKELY_DUPLICATE", str(error), metadata, [failure]
    )


def status_of(error: BaseException) -> status_pb2.Status:
    """The rich status for any exception raised while serving a call."""
    code = grpc.StatusCode
    if isinstance(error, ApiError):
        extra: list[Message] = [_bad_request(error.violations)] if error.violations else []
        extra += error.details
        return _status(error.code, error.reason, str(error), error.metadata, extra)
    if isinstance(error, ValidationFailed):
        return _status(
            code.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            str(error),
            {"fields": ",".join(v.field for v in error.violations)[:500]},
            [_bad_request(error.violations)],
        )
    if isinstance(error, TokenError):
        return _status(code.UNAUTHENTICATED, error.reason, str(error))
    if isinstance(error, AccessDenied):
        meta = {"customers": ",".join(error.customer_ids)} if error.customer_ids else {}
        return _status(code.PERMISSION_DENIED, "PERMISSION_DENIED", str(error), meta)
    if isinstance(error, CustomerNotFound):
        return _status(
            code.NOT_FOUND,
            "CUSTOMER_NOT_FOUND",
            str(error),
            {"customer": f"customers/{error.customer_id}"},
            [_resource(error.customer_id)],
        )
    if isinstance(error, HistoryNotFound):
        return _status(code.NOT_FOUND, "NOT_IN_HISTORY", str(error))
    if isinstance(error, CustomerErasedError):
        name = f"customers/{error.customer_id}"
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="ERASED", subject=name, description="the customer has been erased"
                )
            ]
        )
        return _status(
            code.FAILED_PRECONDITION, "CUSTOMER_ERASED", str(error), {"customer": name}, [failure]
        )
    if isinstance(error, CustomerOnHold):
        name = f"customers/{error.customer_id}"
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="LEGAL_HOLD", subject=name, description="the customer is under legal hold"
                )
            ]
        )
        return _status(
            code.FAILED_PRECONDITION, "LEGAL_HOLD", str(error), {"customer": name}, [failure]
        )
    if isinstance(error, HoldRefused):
        return _status(code.FAILED_PRECONDITION, "HOLD_REFUSED", str(error))
    if isinstance(error, CustomerMergedError):
        name = f"customers/{error.customer_id}"
        into = f"customers/{error.target_id}"
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="MERGED", subject=name, description=f"merged into {into}"
                )
            ]
        )
        return _status(
            code.FAILED_PRECONDITION,
            "CUSTOMER_MERGED",
            str(error),
            {"customer": name, "merged_into": into},
            [failure],
        )
    if isinstance(error, LikelyDuplicate):
        return _likely_duplicate(error)
    if isinstance(error, ConcurrentChange):
        return _status(code.ABORTED, "CONCURRENT_CHANGE", str(error))
    if isinstance(error, MergeRefused):
        return _status(code.FAILED_PRECONDITION, "MERGE_REFUSED", str(error))
    if isinstance(error, StaleVersion):
        return _status(
            code.ABORTED,
            "STALE_ETAG",
            str(error),
            {
                "customer": f"customers/{error.customer_id}",
                "expected_etag": str(error.expected),
                "current_etag": str(error.actual),
            },
        )
    if isinstance(error, AuditStoreError | RefusedToSign):
        log.error("audit integrity failure: %s", error)
        return _status(code.DATA_LOSS, "INTEGRITY_FAILURE", str(error))
    if isinstance(error, PublicationError):
        log.error("tree head not published: %s", error)
        return _status(
            code.UNAVAILABLE,
            "TREE_HEAD_NOT_PUBLISHED",
            "the tree head could not be published; retry",
        )
    if isinstance(error, JournalWriteFailed):
        # The erasure is durable (event committed, key destroyed); the journal catches up
        # from the log at the next start. Retrying the erasure would be refused as done.
        return _status(
            code.UNAVAILABLE,
            "ERASURE_NOT_JOURNALED",
            "the erasure is recorded and the key destroyed, but its certificate could not be "
            "written to the erasure journal (logged); the ledger journals it at its next start",
            {"customer": f"customers/{error.certificate.certificate.customer_id}"},
        )
    if isinstance(error, ProofUnavailable):
        return _status(code.NOT_FOUND, "PROOF_UNAVAILABLE", str(error))
    if isinstance(error, ProjectionRowTampered):
        # The customer id only: the row's values are exactly what must not be trusted.
        log.error("projection row tampered: %s", error)
        name = f"customers/{error.customer_id}"
        return _status(
            code.DATA_LOSS,
            "PROJECTION_ROW_TAMPERED",
            str(error),
            {"customer": name, "table": error.table},
            [_resource(error.customer_id)],
        )
    if isinstance(error, SealError):
        log.error("integrity failure: %s", error)
        return _status(code.DATA_LOSS, "INTEGRITY_FAILURE", str(error))
    if isinstance(error, KeyMissing):
        # Lost, not erased: the log records no erasure of this customer.
        name = f"customers/{error.customer_id}"
        log.error("integrity failure: %s", error)
        return _status(
            code.DATA_LOSS,
            "DATA_KEY_MISSING",
            str(error),
            {"customer": name},
            [_resource(error.customer_id)],
        )
    if isinstance(error, KeyStoreLost):
        log.error("integrity failure: %s", error)
        return _status(code.DATA_LOSS, "KEY_STORE_LOST", str(error))
    if isinstance(error, RecordConflictError):
        # A write met another one on the same record (ConflictingWrite, the library's
        # IntegrityError): a real conflict, since a write meeting its own committed rows
        # after a lost acknowledgement succeeds (ledger.group_commit). Retry from a read.
        return _status(
            code.ABORTED,
            "CONCURRENT_CHANGE",
            "another change to this record was written first; nothing was written, retry",
        )
    if isinstance(error, STORE_UNAVAILABLE):
        log.error("store unavailable: %s", type(error).__name__)
        return _status(code.UNAVAILABLE, "STORE_UNAVAILABLE", "the store is unavailable; retry")
    incident = secrets.token_hex(6)
    log.exception("internal error %s", incident, exc_info=error)
    return _status(
        code.INTERNAL, "INTERNAL", f"internal error (incident {incident})", {"incident": incident}
    )


def grpc_status(error: BaseException) -> grpc.Status:
    return rpc_status.to_status(status_of(error))
