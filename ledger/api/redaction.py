"""Keep bearer tokens out of log lines.

A token in a log is a credential anyone reading the logs can replay until it expires. The
API never logs one on purpose (token errors carry a fixed message, `ledger.api.tokens`), and
nothing raised while checking one escapes to gRPC; this filter is the second line, for a
log line that quotes a request's metadata or an exception's text anyway.
"""

from __future__ import annotations

import logging
import re

# "Bearer <anything>" and anything shaped like a compact JWS (a JSON header starts "eyJ").
_TOKEN = re.compile(r"(?i)\bbearer\s+\S+|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?")
REDACTED = "[redacted token]"
_GRPC_BAD_METADATA = "Invalid encoding on %s"  # grpc/_cython/_cygrpc/grpc_string.pyx.pxi
# gRPC's server logs an exception escaping a handler with its text; ours log the rest.
LOGGERS = ("grpc._server", "grpc._common", "grpc._cython.cygrpc", "ledger", "ledger.api")


def redact(text: str) -> str:
    return _TOKEN.sub(REDACTED, text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _GRPC_BAD_METADATA:
            # gRPC logs a metadata value that is not UTF-8 whole (the token, were it the
            # `authorization` header) before passing it on decoded as Latin-1.
            record.args = ("[redacted metadata value]",)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactTokens()


def install() -> None:
    """Idempotent: the server calls it when it is built."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
