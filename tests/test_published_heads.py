"""History cannot be rewritten by someone with database access only.

The attacker here can run any SQL on the store, but has neither the ledger's private key nor
write access to the published tree heads file. Each test does what such an insider would
do — rewrite an event and recompute its leaf and every node above it, or append a forged
event with a correct leaf, deleting the database's tree heads as well — and checks that
`ledger verify` names the position (exit 4) and that the ledger refuses to sign it. The
server signs and publishes heads while it runs, so the unsigned window is bounded even
after a crash; auditors' saved heads expose a re-signed rewrite.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from bench.server_process import ServerProcess, bench_token
from ledger.api.server import build_server
from ledger.audit import client_check, merkle
from ledger.audit.leaf import encode_leaf
from ledger.audit.proofs import consistency_proof
from ledger.audit.storage import AuditStore
from ledger.audit.tree_heads import RefusedToSign, TreeHead
from ledger.bootstrap import open_ledger
from ledger.cli.main import main
from ledger.client import LedgerClient
from ledger.config import Settings
from tests.api_support import Api, customer
from tests.helpers import StoreHandle, person

OWNER_ASSIGNED = "ledger.domain.customer:Customer.OwnerAssigned"


# An insider's tools: plain SQL, and the public leaf and tree formats ------------------------


def position_column(store: StoreHandle) -> str:
    return "rowid" if store.ph == "?" else "notification_id"


def raw_id(store: StoreHandle, customer_id: UUID) -> Any:
    return customer_id.hex if store.ph == "?" else customer_id


def position_of(store: StoreHandle, customer_id: UUID, version: int) -> int:
    rows = store.execute(
        f"SELECT {position_column(store)} FROM {store.events_table} "
        f"WHERE originator_id = {store.ph} AND originator_version = {store.ph}",
        (raw_id(store, customer_id), version),
    )
    return int(rows[0][0])


def recompute_tree(store: StoreHandle) -> None:
    """Make the leaves table agree with the events table again, as an insider would after
    editing events: every leaf hash and interior node recomputed, leaves for new events
    appended. The MAC column is left as it is: computing one needs the ledger's key."""
    column = position_column(store)
    rows = store.execute(
        f"SELECT {column}, originator_id, originator_version, topic, state "
        f"FROM {store.events_table} ORDER BY {column}"
    )
    stored = {
        int(i): (bytes(h), bytes(n))
        for i, h, n in store.execute(
            "SELECT leaf_index, leaf_hash, nodes FROM ledger_merkle_leaves"
        )
    }
    frontier = merkle.Frontier()
    completed = bytearray()
    for position, oid, version, topic, state in rows:
        leaf = encode_leaf(int(position), str(UUID(str(oid))), int(version), topic, bytes(state))
        hashed = merkle.leaf_hash(leaf)
        index = frontier.size
        completed.clear()
        frontier.append(hashed, lambda node, h: completed.extend(h))
        if index not in stored:
            store.execute(
                "INSERT INTO ledger_merkle_leaves (leaf_index, position, leaf_hash, nodes) "
                f"VALUES ({store.ph}, {store.ph}, {store.ph}, {store.ph})",
                (index, int(position), hashed, bytes(completed)),
            )
        elif stored[index] != (hashed, bytes(completed)):
            store.execute(
                f"UPDATE ledger_merkle_leaves SET leaf_hash = {store.ph}, nodes = {store.ph} "
                f"WHERE leaf_index = {store.ph}",
                (hashed, bytes(completed), index),
            )


def published(store: StoreHandle) -> list[dict[str, Any]]:
    path = store.settings.resolved_tree_head_file
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verify(
    store: StoreHandle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
) -> tuple[int, dict[str, Any], str]:
    """`ledger verify --json` in-process: (exit code, report, stderr)."""
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    capsys.readouterr()
    code = main(["verify", "--json", *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else {}, err


def story(store: StoreHandle) -> tuple[UUID, UUID]:
    """Two customers and an owner change; the ledger signs and publishes as it closes."""
    with store.open() as ledger:
        a = ledger.register(person(), actor="clerk")
        b = ledger.register(person(given_name="Bea"), actor="clerk")
        ledger.assign_owner(b, "team.x", actor="clerk")
        ledger.change(a, {"tags": ["vip"]}, actor="clerk")
    return a, b


def refuses_to_sign(store: StoreHandle, match: str) -> None:
    before = published(store)
    with store.open() as ledger, pytest.raises(RefusedToSign, match=match):
        ledger.issue_tree_head()
    assert published(store) == before, "nothing new was published"


# The findings ------------------------------------------------------------------------------


def test_an_insider_rewrite_of_a_registered_owner_is_caught_after_heads_were_published(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = story(store)
    assert published(store)[-1]["tree_size"] == 4
    state = store.state_of(a, 1)
    assert b'"owner":"sales.emea"' in state
    store.set_state(a, 1, state.replace(b'"owner":"sales.emea"', b'"owner":"mallory.xx"'))
    recompute_tree(store)
    store.execute("DELETE FROM ledger_tree_heads")  # the database's own heads go too

    code, report, err = verify(store, monkeypatch, capsys)
    rewritten = position_of(store, a, 1)
    assert code == 4, err
    assert f"FAILED at position {rewritten}:" in err
    assert report["first_problem"]["position"] == rewritten
    assert "MAC that does not hold" in report["first_problem"]["problem"]
    assert report["published_tree_head_size"] == 4 and report["leaf_macs_checked"]
    assert "mallory" not in err and "sales.emea" not in err
    # An auditor without the private key: the published head alone exposes it.
    key_file = public_key(store)
    with without_private_key(store):
        code, report, _ = verify(store, monkeypatch, capsys, "--public-key", str(key_file))
    assert code == 4 and not report["leaf_macs_checked"]
    assert "the published tree head (size 4" in report["first_problem"]["problem"]
    refuses_to_sign(store, "no longer has the root signed in the tree head published")


def test_a_forged_owner_assigned_event_appended_with_its_leaf_is_caught(
    store: StoreHandle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = story(store)
    template = store.state_of(b, 2)  # a genuine OwnerAssigned event
    forged_state = template.replace(b'"owner":"team.x"', b'"owner":"mallory"')
    store.execute(
        f"INSERT INTO {store.events_table} (originator_id, originator_version, topic, state) "
        f"VALUES ({store.ph}, 3, {store.ph}, {store.ph})",
        (raw_id(store, a), OWNER_ASSIGNED, forged_state),
    )
    recompute_tree(store)
    forged = position_of(store, a, 3)

    code, report, err = verify(store, monkeypatch, capsys)
    assert code == 4, err
    assert report["first_problem"]["position"] == forged
    assert "has no MAC" in report["first_problem"]["problem"]
    # Opening the ledger does not authenticate the forged leaf as a "legacy" one, even
    # with the database's heads deleted: this ledger publishes its heads.
    store.execute("DELETE FROM ledger_tree_heads")
    refuses_to_sign(store, f"position {forged}\\) has no MAC")
    code, report, _ = verify(store, monkeypatch, capsys)
    assert code == 4 and report["first_problem"]["position"] == forged
    # The background signer logs the refusal (position only) and keeps the process up.
    with store.open() as ledger, caplog.at_level(logging.ERROR, logger="ledger.audit"):
        signer = ledger.start_tree_head_signer()
        assert signer.sign_now() is None
    assert f"position {forged}) has no MAC" in caplog.text
    assert "mallory" not in caplog.text


@contextmanager
def without_private_key(store: StoreHandle) -> Iterator[None]:
    """As on an auditor's host, which holds the public key only."""
    private_key = store.settings.resolved_signing_key_file
    away = private_key.with_suffix(".away")
    private_key.rename(away)
    try:
        yield
    finally:
        away.rename(private_key)


def public_key(store: StoreHandle) -> Path:
    path = store.workdir.parent / "ledger.pub"
    with store.open() as ledger:
        path.write_text(ledger.signer.public_key_pem())
    return path


def test_serve_signs_and_publishes_on_a_timer_and_every_n_events(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server as `ledger serve` builds it: heads appear while it runs, not only when
    it stops, and GetTreeHead answers with a published head."""

    def serving(settings: Any) -> Api:
        ledger = open_ledger(settings)
        ledger.start_tree_head_signer()
        return Api(ledger, build_server(ledger, settings, listen="127.0.0.1:0"), settings)

    def wait_for(size: int, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            heads = published(store)
            if heads and heads[-1]["tree_size"] >= size:
                return heads[-1]
            time.sleep(0.02)
        raise AssertionError(f"no head of size {size} published within {seconds}s")

    def size_now() -> int:
        with AuditStore.open(store.settings) as view:
            return view.size()

    # Every N events, with the timer off.
    api = serving(replace(store.settings, tree_head_seconds=0, tree_head_every=5))
    try:
        client = api.client("svc", "service")
        for n in range(4):
            client.create_customer(customer(given_name=f"N{n}"))
        wait_for(5, 5.0)
        assert size_now() >= 5
    finally:
        api.close()
    assert published(store)[-1]["tree_size"] == size_now(), "signed once more at shutdown"

    # On the timer, with the count off.
    api = serving(replace(store.settings, tree_head_seconds=0.2, tree_head_every=0))
    try:
        client = api.client("svc", "service")
        client.create_customer(customer(given_name="Timer"))
        head = wait_for(size_now(), 3.0)
        served = client.get_tree_head()
        assert served.tree_size >= head["tree_size"]
        assert published(store)[-1]["tree_size"] == served.tree_size
    finally:
        api.close()
    code, report, err = verify(store, monkeypatch, capsys)
    assert code == 0, err
    assert report["published_tree_head_size"] == size_now()


def test_after_a_sigkill_heads_are_published_up_to_the_bounded_window(tmp_path: Path) -> None:
    data_dir = tmp_path / "ledger-data"
    url = f"sqlite:///{data_dir / 'ledger.db'}"
    settings = Settings(store_url=url, data_dir=data_dir)
    token = bench_token(data_dir, url, ["service"], principal="crash-test")
    with ServerProcess(url, data_dir, LEDGER_TREE_HEAD_SECONDS="0.2") as server:
        with LedgerClient(server.target, token=token) as client:
            for n in range(5):
                client.create_customer(customer(given_name=f"K{n}"))
        deadline = time.monotonic() + 10
        heads_file = data_dir / "published-tree-heads.jsonl"
        while True:
            with AuditStore.open(settings) as view:
                size = view.size()
            lines = heads_file.read_text().splitlines() if heads_file.exists() else []
            if lines and json.loads(lines[-1])["tree_size"] == size:
                break
            assert time.monotonic() < deadline, "the server published no head while running"
            time.sleep(0.05)
        server.kill()
    latest = json.loads(heads_file.read_text().splitlines()[-1])
    with open_ledger(settings) as ledger:
        client_check.verify_tree_head(latest, ledger.signer.public_key_pem())
    assert latest["tree_size"] >= 10  # five creates: a registration and its read record each
    assert main(["verify", "--store", url]) == 0


def test_an_auditors_saved_head_refuses_a_re_signed_rewrite_and_accepts_an_extension(
    store: StoreHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, _ = story(store)
    with store.open() as ledger:
        saved = ledger.issue_tree_head()
        signer = ledger.signer
        ledger.register(person(given_name="Cy"), actor="clerk")
        honest = ledger.issue_tree_head()
    pem = signer.public_key_pem()
    saved_doc = saved.to_json()
    with AuditStore.open(store.settings) as view:
        proof = consistency_proof(view, saved.tree_size).to_json()
    assert "extends" in client_check.check_consistency_document(proof, pem, saved_doc)
    check = tmp_path / "check.json"
    check.write_text(json.dumps(proof))
    saved_file = tmp_path / "saved.json"
    saved_file.write_text(json.dumps(saved_doc))
    key_file = public_key(store)
    args = ["--public-key", str(key_file), "--saved-head", str(saved_file)]
    assert client_check.main(["consistency", str(check), *args]) == 0

    # The rewrite, re-signed (by someone who got hold of the key, or a signer that did not
    # check): every signature is valid, only the saved root tells.
    state = store.state_of(a, 1)
    store.set_state(a, 1, state.replace(b'"owner":"sales.emea"', b'"owner":"mallory.xx"'))
    recompute_tree(store)
    store.execute("DELETE FROM ledger_tree_heads")
    with AuditStore.open(store.settings) as view:
        for size in (saved.tree_size, honest.tree_size):
            view.add_tree_head(TreeHead.issue(size, view.root(size), signer))
        forged_proof = consistency_proof(view, saved.tree_size).to_json()
        forged_head = view.latest_tree_head()
    assert forged_head is not None
    check.write_text(json.dumps(forged_proof))
    assert client_check.main(["consistency", str(check), "--public-key", str(key_file)]) == 0
    capsys.readouterr()
    assert client_check.main(["consistency", str(check), *args]) == 1
    assert "another root for size" in capsys.readouterr().err
    head_file = tmp_path / "head.json"
    head_file.write_text(json.dumps(forged_head.to_json()))
    assert client_check.main(["tree-head", str(head_file), *args]) == 0  # newer: no verdict
    check.write_text(json.dumps(forged_proof["old_tree_head"]))
    assert client_check.main(["tree-head", str(check), *args]) == 1
    # The rewritten export hashes to the re-signed head, but not to the saved root.
    with AuditStore.open(store.settings) as view, view.snapshot():
        lines = [
            json.dumps(
                {
                    "position": e.position,
                    "originator_id": e.originator_id,
                    "version": e.version,
                    "topic": e.topic,
                    "state": base64.b64encode(e.state).decode(),
                }
            )
            for e in view.events()
        ]
    assert "signed root" in client_check.check_export(lines, forged_head.to_json(), pem)
    with pytest.raises(client_check.CheckFailed, match="your saved head's root"):
        client_check.check_export(lines, forged_head.to_json(), pem, saved_doc)
    # A proof from another size than the saved one proves nothing about it.
    with pytest.raises(client_check.CheckFailed, match="not from your saved head"):
        client_check.check_consistency_document(
            proof | {"old_tree_head": honest.to_json()}, pem, saved_doc
        )

    code, report, err = verify(
        store,
        monkeypatch,
        capsys,
        "--from-tree-head",
        str(saved_file),
        "--public-key",
        str(key_file),
    )
    assert code == 4, err
    assert "your saved tree head (size" in json.dumps(report["problems"])


def test_leaves_from_before_leaf_macs_are_authenticated_once(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    story(store)
    # As a store written before leaves carried a MAC (and before heads were published).
    store.execute("DROP INDEX ledger_merkle_leaves_without_mac")
    store.execute("ALTER TABLE ledger_merkle_leaves DROP COLUMN mac")
    store.settings.resolved_tree_head_file.unlink()
    with store.open():
        pass
    assert not store.execute("SELECT 1 FROM ledger_merkle_leaves WHERE mac IS NULL")
    code, report, err = verify(store, monkeypatch, capsys)
    assert code == 0, err
    assert report["leaf_macs_checked"] and report["published_tree_head_size"] == 4
    # Once published, stripping the MACs does not make leaves "legacy" again.
    store.execute("UPDATE ledger_merkle_leaves SET mac = NULL WHERE leaf_index = 3")
    with store.open():
        pass
    code, report, _ = verify(store, monkeypatch, capsys)
    assert code == 4 and "has no MAC" in report["first_problem"]["problem"]


def test_verify_says_when_heads_were_never_published(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    story(store)
    store.settings.resolved_tree_head_file.unlink()
    code, report, _ = verify(store, monkeypatch, capsys)
    assert code == 4
    assert "no head is published in" in report["first_problem"]["problem"]
    code, report, _ = verify(store, monkeypatch, capsys, "--no-published-heads")
    assert code == 0 and report["published_tree_head_size"] is None


def test_a_signing_failure_is_logged_and_retried_while_the_server_keeps_serving(
    store: StoreHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "heads"
    blocked.write_text("not a directory")  # the publication directory cannot be made
    settings = replace(store.settings, tree_head_dir=blocked, tree_head_seconds=0.1)
    ledger = open_ledger(settings)
    with caplog.at_level(logging.ERROR, logger="ledger.audit"):
        ledger.start_tree_head_signer()
        api = Api(ledger, build_server(ledger, settings, listen="127.0.0.1:0"), settings)
        try:
            client = api.client("svc", "service")
            created = client.create_customer(customer(given_name="Retry"))
            deadline = time.monotonic() + 5
            while "tree head not signed (will retry)" not in caplog.text:
                assert time.monotonic() < deadline, "the failure was not logged"
                time.sleep(0.02)
            assert client.get_customer(created.name).given_name == "Retry"
            blocked.unlink()
            heads = blocked / "published-tree-heads.jsonl"
            while not heads.exists():
                assert time.monotonic() < deadline + 5, "signing was not retried"
                time.sleep(0.02)
        finally:
            api.close()
    assert "Retry" not in caplog.text
    with AuditStore.open(settings) as view:
        assert json.loads(heads.read_text().splitlines()[-1])["tree_size"] == view.size()


def test_tree_head_says_when_it_cannot_publish(
    store: StoreHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    story(store)
    blocked = tmp_path / "heads"
    blocked.write_text("not a directory")
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    monkeypatch.setenv("LEDGER_TREE_HEAD_DIR", str(blocked))
    capsys.readouterr()
    assert main(["tree-head"]) == 1
    err = capsys.readouterr().err
    assert "tree head not published: cannot open" in err and "Traceback" not in err
