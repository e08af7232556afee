"""A gRPC call over raw HTTP/2 (the `h2` library), for header bytes a gRPC client refuses
to send (non-ASCII, control characters) but any other HTTP/2 client can."""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events


def raw_call(
    target: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> dict[bytes, bytes]:
    """The response's headers and trailers (`grpc-status`, ...); empty when the transport
    reset the stream before any reached the application."""
    host, port = target.rsplit(":", 1)
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = h2.connection.H2Connection(config)
    got: dict[bytes, bytes] = {}
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        request = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", target.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *headers,
        ]
        conn.send_headers(stream, request)
        conn.send_data(stream, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
        sock.sendall(conn.data_to_send())
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    got.update((bytes(k), bytes(v)) for k, v in event.headers)
                if isinstance(
                    event,
                    h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated,
                ):
                    done = True
            sock.sendall(conn.data_to_send())
    return got
