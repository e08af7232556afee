"""Slots for server streams. A followed stream holds a worker thread of the gRPC pool for as
long as it is open, so without a cap a handful of clients could occupy every worker and
starve unary calls and health checks. Streams are therefore capped in total (below the
pool size: see `ApiSettings.stream_slots`) and per principal; a stream beyond either cap is
refused at once with RESOURCE_EXHAUSTED (ErrorInfo TOO_MANY_STREAMS plus a QuotaFailure).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.rpc import error_details_pb2

from ledger.api.errors import ApiError, grpc_status
from ledger.api.refusals import peer_host


def _exhausted(scope: str, limit: int, setting: str) -> ApiError:
    failure = error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=scope, description=f"at most {limit} open streams ({setting})"
            )
        ]
    )
    return ApiError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_STREAMS",
        f"too many open streams {scope}: at most {limit}; close one or retry later",
        metadata={"limit": str(limit), "scope": scope},
        details=[failure],
    )


class StreamSlots:
    def __init__(self, total: int, per_principal: int) -> None:
        self.total = total
        self.per_principal = per_principal
        self._lock = threading.Lock()
        self._open = 0
        self._by_principal: dict[str, int] = {}

    @property
    def open(self) -> int:
        return self._open

    @contextmanager
    def hold(self, principal: str) -> Iterator[None]:
        """A slot for the stream's lifetime; raises ApiError (RESOURCE_EXHAUSTED) if none."""
        with self._lock:
            mine = self._by_principal.get(principal, 0)
            if mine >= self.per_principal:
                raise _exhausted(
                    "for this principal", self.per_principal, "LEDGER_MAX_STREAMS_PER_PRINCIPAL"
                )
            if self._open >= self.total:
                raise _exhausted("on this server", self.total, "LEDGER_MAX_STREAMS")
            self._open += 1
            self._by_principal[principal] = mine + 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                left = self._by_principal[principal] - 1
                if left:
                    self._by_principal[principal] = left
                else:
                    del self._by_principal[principal]


class OtherStreamsLimit(grpc.ServerInterceptor):
    """The same slots for the streams that do not pass the gate: health `Watch` and
    reflection hold a worker while open too, and need no credentials, so without this
    anyone who can connect could occupy every worker. Counted per peer address (they have
    no principal) and in the shared total. Methods of `gated` services are left alone:
    the gate holds their slots, per principal."""

    def __init__(self, slots: StreamSlots, gated: tuple[str, ...]) -> None:
        self.slots = slots
        self.gated = tuple(f"/{name}/" for name in gated)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method: str = getattr(handler_call_details, "method", "") or ""
        if handler is None or not handler.response_streaming or method.startswith(self.gated):
            return handler
        slots = self.slots

        def limited(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            hold = slots.hold("peer:" + peer_host(context.peer() or ""))
            try:
                hold.__enter__()
            except ApiError as error:
                context.abort_with_status(grpc_status(error))
            try:
                behaviour = handler.unary_stream or handler.stream_stream
                assert behaviour is not None
                yield from behaviour(request, context)
            finally:
                hold.__exit__(None, None, None)

        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(
                limited,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
