"""The gRPC transport's own ceiling: a CreateCustomer servicer that does no work at all,
driven by the same client processes, threads, channels and messages as the real server.

Every figure through the API includes what Python's gRPC costs on both ends (HTTP/2 framing,
protobuf, the server's thread pool, the clients' GILs), and on a two-core machine the
clients and the server share the cores. So a registration rate can only be judged next to
what the transport alone reaches on the same machine in the same run: no server doing real
work can exceed it. The no-op server is configured as `ledger serve` is (a thread pool of
`LEDGER_API_WORKERS` workers, the same switch interval) and answers each call with the
customer it was sent, named, so that the reply is as large as the real one.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import grpc

from bench.api_load import LoadResult, create_load
from ledger.api.server import grpc_server, set_switch_interval
from ledger.config import Settings
from ledger.v1 import customer_service_pb2, resources_pb2


def _create_customer(
    request: customer_service_pb2.CreateCustomerRequest, context: grpc.ServicerContext
) -> resources_pb2.Customer:
    """Authenticates nothing, validates nothing, stores nothing."""
    reply = resources_pb2.Customer()
    reply.CopyFrom(request.customer)
    reply.name = f"customers/{uuid4()}"
    return reply


NOOP_SERVICE = grpc.method_handlers_generic_handler(
    "ledger.v1.CustomerService",
    {
        "CreateCustomer": grpc.unary_unary_rpc_method_handler(
            _create_customer,
            request_deserializer=customer_service_pb2.CreateCustomerRequest.FromString,
            response_serializer=resources_pb2.Customer.SerializeToString,
        )
    },
)


def _serve(workers: int, ports: Any, stop: Any) -> None:
    set_switch_interval()
    server = grpc_server(workers)
    server.add_generic_rpc_handlers((NOOP_SERVICE,))
    ports.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    stop.wait()
    server.stop(0)


def noop_create_load(
    profiles: Sequence[dict[str, Any]], clients: int, processes: int
) -> LoadResult:
    """`create_load` against a no-op server started for the call in its own process."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    stop = ctx.Event()
    workers = Settings.from_env().api.workers
    server = ctx.Process(target=_serve, args=(workers, ports, stop), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=60)
        return create_load(f"127.0.0.1:{port}", "no-token", profiles, clients, processes)
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
