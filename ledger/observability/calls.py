"""One log line and two metric updates per gRPC call, from the gate every call passes.

The line holds what an operator needs to follow a call and nothing of its content: the
method, the status code, the latency, the principal (an account name, not a person's
data), the peer address and the request id a client chose for a retried create. Never a
token, a request field or an error's text (error texts can quote what the caller sent).
"""

from __future__ import annotations

import logging

from ledger.observability.metrics import LedgerMetrics

call_log = logging.getLogger("ledger.api.calls")


class CallObserver:
    def __init__(self, metrics: LedgerMetrics | None = None) -> None:
        self.metrics = metrics

    def finished(
        self,
        *,
        method: str,
        code: str,
        seconds: float,
        principal: str | None,
        peer: str,
        request_id: str,
    ) -> None:
        if self.metrics is not None:
            self.metrics.observe_call(method, code, seconds)
        if call_log.isEnabledFor(logging.INFO):
            fields: dict[str, object] = {
                "method": method,
                "code": code,
                "latency_ms": round(seconds * 1000, 3),
                "principal": principal,
                "peer": peer,
            }
            if request_id:
                fields["request_id"] = request_id
            call_log.info("%s %s", method, code, extra={"fields": fields})

    def refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.auth_refusals.labels(reason).inc()
