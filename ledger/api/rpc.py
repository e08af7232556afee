"""The one path every call takes: parse, authenticate, authorise, run, map errors.

Handlers are built from the services' descriptors, so a method added to a proto and to its
servicer class is served with the same checks and no registration code. Requests are parsed
by a deserializer that never raises: bytes that are not a valid request become `Malformed`
and get INVALID_ARGUMENT after authentication (gRPC's own handling would answer INTERNAL).

Order of checks (AIP-211): authentication, then the method permission, then the request's
content; a record-level refusal comes from the servicer once it has loaded the customer.
Every refusal is recorded through the access log before the caller hears of it, refused
authentication included (ledger.api.refusals, coalesced per source).

Server streams hold a slot for their lifetime (ledger.api.streams) and re-check the
caller's credential before every message they send (`Call.check_credentials`), so a
revoked or expired credential ends an open stream with UNAUTHENTICATED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from uuid import UUID

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from ledger.api.access import PURPOSE_METADATA, AccessLog, check_purpose
from ledger.api.auth import Authenticator, Principal
from ledger.api.authz import AccessDenied, Grant
from ledger.api.errors import ApiError, grpc_status
from ledger.api.purposes import granted, may_act_for
from ledger.api.refusals import RefusalLog
from ledger.api.streams import StreamSlots
from ledger.api.tokens import TokenError
from ledger.consent.basis import PurposeNotInPolicy
from ledger.consent.reads import PurposeReads
from ledger.domain.errors import ValidationFailed
from ledger.domain.text import NUL_REASON, has_nul
from ledger.observability.calls import CallObserver
from ledger.policy.model import Purpose

log = logging.getLogger("ledger.api")


class Malformed:
    """Stands in for a request whose bytes did not parse."""


@dataclass(frozen=True)
class Call:
    """What a servicer method gets besides its request: who calls, what they may do."""

    principal: Principal
    grant: Grant
    method: str
    purpose: str
    context: grpc.ServicerContext
    access_log: AccessLog
    # The full method ("/ledger.v1.CustomerService/GetCustomer"), as the access log names it.
    path: str = ""
    # Raises TokenError once the call's credential expired or was revoked (see `Gate`).
    recheck: Callable[[Principal], None] | None = None
    # The data-policy purpose the call is judged by (`ledger.consent.basis.resolve`) and
    # what masks its answers; None on a gate built without a policy (nothing masked).
    judged: Purpose | None = None
    reads: PurposeReads | None = None

    def masks(self, customer_ids: Iterable[UUID]) -> dict[UUID, dict[str, str]]:
        """Per customer, the personal fields this call's purpose may not see, and why
        (consents read from the log now: a withdrawal governs the next call)."""
        if self.reads is None or self.judged is None:
            return {}
        return self.reads.masks(self.judged, customer_ids)

    def check_credentials(self) -> None:
        """For long calls, before each message and while waiting: raises TokenError (the
        call then ends UNAUTHENTICATED) once the credential it was opened with has expired
        or been revoked. Cheap: no query of its own (ledger.api.auth.RevocationWatch)."""
        if self.recheck is not None:
            self.recheck(self.principal)

    def record_access(
        self,
        customer_ids: Sequence[str],
        fields: Sequence[str],
        masked: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Before returning personal data of `customer_ids` (resource names or ids) in
        `fields`: durable when this returns (see `ledger.api.access.AuditedAccess`).
        `masked`: what the purpose left out, and why (`ledger.consent.reads.masked_record`);
        an answer that masked every field is recorded too, naming them."""
        if (fields or masked) and customer_ids:
            extra: dict[str, Any] = {"masked": list(masked)} if masked else {}
            self.access_log.record_access(
                principal=self.principal.name,
                method=self.path or self.method,
                customer_ids=list(customer_ids),
                fields=sorted(set(fields)),
                purpose=self.purpose,
                **extra,
            )

    def access_events(
        self,
        customer_ids: Sequence[str],
        fields: Sequence[str],
        masked: Sequence[dict[str, Any]] = (),
    ) -> tuple[list[Any], Callable[[], None]] | None:
        """The events recording this read, for a command to store in its own transaction
        (see `AuditedAccess.access_events`), and what to call if that fails; None when the
        access log hands out no events (then `record_access` after the command)."""
        bundle = getattr(self.access_log, "access_events", None)
        if bundle is None:
            return None
        extra: dict[str, Any] = {"masked": list(masked)} if masked else {}
        events, undo = bundle(
            principal=self.principal.name,
            method=self.path or self.method,
            customer_ids=list(customer_ids),
            fields=sorted(set(fields)),
            purpose=self.purpose,
            **extra,
        )
        return list(events), undo

    def record_denied(self, error: AccessDenied) -> None:
        _record_denied(
            self.access_log, self.principal.name, self.path or self.method, error, self.purpose
        )


def _record_denied(
    access_log: AccessLog, principal: str, method: str, error: AccessDenied, purpose: str
) -> None:
    try:
        access_log.record_denied(
            principal=principal,
            method=method,
            customer_ids=list(error.customer_ids),
            reason=str(error),
            purpose=purpose,
        )
    except Exception:  # refusing stays right even if recording the refusal failed
        log.exception("could not record a denied %s by %s", method, principal)


class Gate:
    def __init__(
        self,
        authenticator: Authenticator,
        access_log: AccessLog,
        *,
        refusals: RefusalLog | None = None,
        streams: StreamSlots | None = None,
        observer: CallObserver | None = None,
        reads: PurposeReads | None = None,
    ) -> None:
        """`reads`: the data policy's purpose-bound reads (grants checked, answers masked);
        None serves without them (a gate built for a test of something else)."""
        self.reads = reads
        self.authenticator = authenticator
        self.access_log = access_log
        self.refusals = refusals if refusals is not None else RefusalLog(access_log)
        self.streams = streams if streams is not None else StreamSlots(32, 4)
        self.observer = observer if observer is not None else CallObserver()

    def open(
        self,
        context: grpc.ServicerContext,
        method: str,
        path: str = "",
        identified: Callable[[str], None] | None = None,
    ) -> Call:
        """`method`: the short name (authorisation); `path`: the full one (access log);
        `identified` hears the principal's name once authenticated (the call log names
        who was refused a permission, too)."""
        try:
            principal = self.authenticator.authenticate(context)
        except TokenError as error:
            self.observer.refused(error.reason)
            self.refusals.refused(method=path or method, peer=context.peer() or "", error=error)
            raise
        if identified is not None:
            identified(principal.name)
        purposes = [
            v.decode("latin-1") if isinstance(v, bytes) else v
            for k, v in (context.invocation_metadata() or ())
            if k == PURPOSE_METADATA
        ]
        purpose = purposes[-1] if purposes else ""
        try:
            purpose = check_purpose(purpose)
            purpose_error = None
        except ValidationFailed as error:
            purpose, purpose_error = "", error
        try:
            grant = Grant.for_call(method, principal.name, principal.roles)
        except AccessDenied as denied:
            _record_denied(self.access_log, principal.name, path or method, denied, purpose)
            raise
        if purpose_error is not None:
            raise purpose_error
        judged = self._judge(principal, purpose, path or method)
        peer = context.peer() or ""

        def recheck(principal: Principal) -> None:
            try:
                self.authenticator.still_valid(principal)
            except TokenError as error:
                self.observer.refused(error.reason)
                self.refusals.refused(method=path or method, peer=peer, error=error)
                raise

        return Call(
            principal,
            grant,
            method,
            purpose,
            context,
            self.access_log,
            path,
            recheck,
            judged,
            self.reads,
        )

    def _judge(self, principal: Principal, purpose: str, method: str) -> Purpose | None:
        """The policy purpose of the call; AccessDenied (recorded) when it is not in the
        policy or the principal is not granted it (`ledger.api.purposes`)."""
        if self.reads is None:
            return None
        try:
            judged = self.reads.purpose(purpose)
            if not may_act_for(judged.key, granted(principal.roles, principal.purposes)):
                raise AccessDenied(f"the principal is not granted the purpose {judged.key}")
        except PurposeNotInPolicy:
            denied = AccessDenied(f"{purpose} is not a purpose of the data policy")
            _record_denied(self.access_log, principal.name, method, denied, purpose)
            raise denied from None
        except AccessDenied as denied:
            _record_denied(self.access_log, principal.name, method, denied, purpose)
            raise
        return judged


class _Outcome:
    """What the call log and metrics need of a call once it is answered."""

    __slots__ = ("call", "code", "principal", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.call: Call | None = None
        self.principal: str | None = None

    def identified(self, principal: str) -> None:
        self.principal = principal

    def report(
        self, observer: CallObserver, path: str, context: grpc.ServicerContext, request: object
    ) -> None:
        """Never raises: the caller has its answer already."""
        try:
            request_id = getattr(request, "request_id", "")
            observer.finished(
                method=path,
                code=self.code.name,
                seconds=time.perf_counter() - self.started,
                principal=self.principal,
                peer=context.peer() or "",
                request_id=request_id[:128] if isinstance(request_id, str) else "",
            )
        except Exception:
            log.exception("could not report a call to %s", path)


def _abort(
    context: grpc.ServicerContext,
    call: Call | None,
    error: Exception,
    outcome: _Outcome | None = None,
) -> NoReturn:
    """Answer with the error's status. Nothing may escape from here but gRPC's own abort:
    an escaping exception is logged by gRPC with its text ("Exception calling
    application"), and the text could carry what the caller sent (a token, personal data)."""
    if isinstance(error, AccessDenied) and call is not None:
        call.record_denied(error)
    try:
        status = grpc_status(error)
    except Exception as failure:  # building the status failed: a bug, answered plainly
        log.error(
            "could not build the status of a %s (%s)", type(error).__name__, type(failure).__name__
        )
        if outcome is not None:
            outcome.code = grpc.StatusCode.INTERNAL
        context.abort(grpc.StatusCode.INTERNAL, "internal error")
    if outcome is not None:
        outcome.code = status.code
    context.abort_with_status(status)
    raise AssertionError("abort_with_status returns only by raising")  # pragma: no cover


def _field_with_nul(message: Message, prefix: str = "") -> str | None:
    """The path of the first string field holding NUL, or None. PostgreSQL text cannot
    hold NUL (psycopg raises DataError on a query carrying one), so no request string may
    reach a store with one: refused here once for every method, not method by method.
    Paths follow `ledger.api.errors` (`customer.emails[1]`, `customer.external_ids["CRM"]`)."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(key, str) and has_nul(key):
                    return path
                found = _nul_in(item, f'{path}["{key}"]')
                if found is not None:
                    return found
        elif field.is_repeated:
            for index, item in enumerate(value):
                found = _nul_in(item, f"{path}[{index}]")
                if found is not None:
                    return found
        else:
            found = _nul_in(value, path)
            if found is not None:
                return found
    return None


def _nul_in(value: object, path: str) -> str | None:
    if isinstance(value, str):
        return path if has_nul(value) else None
    if isinstance(value, Message):
        return _field_with_nul(value, f"{path}.")
    return None


def _deserializer(cls: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        try:
            return cls.FromString(data)
        except (DecodeError, ValueError, RuntimeError):
            return Malformed()

    return parse


def _handler(
    gate: Gate, method: MethodDescriptor, implementation: object
) -> grpc.RpcMethodHandler[Any, Any]:
    request_cls = message_factory.GetMessageClass(method.input_type)
    name = method.name
    path = f"/{method.containing_service.full_name}/{name}"
    run: Callable[[Any, Call], Any] | None = getattr(implementation, name, None)

    def prepare(
        request: Message | Malformed, context: grpc.ServicerContext, outcome: _Outcome
    ) -> Call:
        call = gate.open(context, name, path, outcome.identified)
        if isinstance(request, Malformed):
            raise ApiError.invalid("request", f"not a valid {method.input_type.full_name}")
        unstorable = _field_with_nul(request)
        if unstorable is not None:
            raise ApiError.invalid(unstorable, NUL_REASON)
        if run is None:  # declared in the proto, not served by this build
            raise ApiError.unimplemented(name, "a later release")
        return call

    if method.server_streaming:

        def stream(request: Message | Malformed, context: grpc.ServicerContext) -> Iterator[Any]:
            outcome = _Outcome()
            try:
                outcome.call = call = prepare(request, context, outcome)
                assert run is not None
                with gate.streams.hold(call.principal.name):
                    for message in run(request, call):
                        call.check_credentials()
                        yield message
            except GeneratorExit:  # the client went away (or the server stops) mid-stream
                outcome.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                _abort(context, outcome.call, error, outcome)
            finally:
                outcome.report(gate.observer, path, context, request)

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=_deserializer(request_cls),
            response_serializer=lambda m: m.SerializeToString(),
        )

    def unary(request: Message | Malformed, context: grpc.ServicerContext) -> Any:
        outcome = _Outcome()
        try:
            outcome.call = call = prepare(request, context, outcome)
            assert run is not None
            return run(request, call)
        except Exception as error:
            _abort(context, outcome.call, error, outcome)
        finally:
            outcome.report(gate.observer, path, context, request)

    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=_deserializer(request_cls),
        response_serializer=lambda m: m.SerializeToString(),
    )


def service_handler(
    service: ServiceDescriptor, implementation: object, gate: Gate
) -> grpc.GenericRpcHandler:
    handlers = {m.name: _handler(gate, m, implementation) for m in service.methods}
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
