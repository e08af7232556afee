"""Load through the gRPC API from client processes: many concurrent CreateCustomer calls,
and sequential calls for latency percentiles.

The Python gRPC client costs CPU too (about as much per call as a light server method), and
the machine this runs on may have only two cores. Clients therefore run in several
processes (`processes`), each with its share of the concurrent callers as threads, so that
one client GIL does not cap the figure; what the client side still costs is reported with
the results (the server's share of CPU time during the load).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.type import date_pb2

from ledger.client import LedgerClient
from ledger.v1 import resources_pb2


def customer_message(profile: dict[str, Any]) -> resources_pb2.Customer:
    """The same customer as `bench.data.profiles` describes, as an API message."""
    message = resources_pb2.Customer(
        given_name=profile["given_name"],
        family_name=profile["family_name"],
        emails=profile.get("emails", []),
        phones=profile.get("phones", []),
        addresses=[resources_pb2.Address(**a) for a in profile.get("addresses", [])],
        owner=profile.get("owner", ""),
    )
    if profile.get("birth_date"):
        year, month, day = (int(p) for p in profile["birth_date"].split("-"))
        message.birth_date.CopyFrom(date_pb2.Date(year=year, month=month, day=day))
    message.external_ids.update(profile.get("external_ids") or {})
    return message


@dataclass(frozen=True)
class LoadResult:
    created: list[str]  # resource names of acknowledged creates, in no particular order
    failures: int
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.created) / self.seconds if self.seconds else 0.0


def _client_process(
    target: str,
    token: str,
    profiles: Sequence[dict[str, Any]],
    threads: int,
    start: Any,
    results: Any,
    stop_on_error: bool,
) -> None:
    messages = [customer_message(p) for p in profiles]
    created: list[str] = []
    failures = 0
    lock = threading.Lock()
    cursor = iter(messages)
    # One channel per thread: one HTTP/2 connection each, as separate services would have.
    clients = [LedgerClient(target, token=token, timeout=60) for _ in range(threads)]
    for client in clients:
        grpc.channel_ready_future(client.channel).result(timeout=30)

    def worker(client: LedgerClient) -> None:
        nonlocal failures
        while True:
            with lock:
                message = next(cursor, None)
            if message is None:
                return
            try:
                reply = client.create_customer(message)
            except grpc.RpcError:
                with lock:
                    failures += 1
                if stop_on_error:
                    return
                continue
            with lock:
                created.append(reply.name)

    start.wait()
    began = time.time()
    pool = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    ended = time.time()
    for client in clients:
        client.close()
    results.put((created, failures, began, ended))


def create_load(
    target: str,
    token: str,
    profiles: Sequence[dict[str, Any]],
    clients: int,
    processes: int,
    *,
    stop_on_error: bool = False,
) -> LoadResult:
    """`clients` concurrent callers in `processes` processes share `profiles`; each
    creates customers until the list is used up. Rate = acknowledged creates over the
    time from the first call to the last reply."""
    ctx = multiprocessing.get_context("spawn")
    processes = max(1, min(processes, clients))
    start = ctx.Event()
    results = ctx.Queue()
    share = [list(profiles[i::processes]) for i in range(processes)]
    threads = [
        clients // processes + (1 if i < clients % processes else 0) for i in range(processes)
    ]
    workers = [
        ctx.Process(
            target=_client_process,
            args=(target, token, share[i], threads[i], start, results, stop_on_error),
            daemon=True,
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.2)
    start.set()
    outcomes = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    created = [name for outcome in outcomes for name in outcome[0]]
    failures = sum(outcome[1] for outcome in outcomes)
    seconds = max(o[3] for o in outcomes) - min(o[2] for o in outcomes)
    return LoadResult(created, failures, seconds)


def warm_up(target: str, token: str, profiles: Sequence[dict[str, Any]]) -> list[str]:
    with LedgerClient(target, token=token) as client:
        return [client.create_customer(customer_message(p)).name for p in profiles]
