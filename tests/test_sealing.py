"""The shared sealing helpers: random and synthetic nonces, and what a moved or altered
sealed value does."""

from __future__ import annotations

import os

import pytest

from ledger.crypto_shred.sealing import (
    NONCE_BYTES,
    SealOpenError,
    open_sealed,
    seal,
    seal_deterministic,
)


def test_random_nonce_seals_differ_and_open() -> None:
    key = os.urandom(32)
    first, second = seal(key, b"ada", b"here"), seal(key, b"ada", b"here")
    assert first != second
    assert open_sealed(key, first, b"here") == open_sealed(key, second, b"here") == b"ada"


def test_deterministic_seal_is_reproducible_and_bound_to_its_place() -> None:
    key = os.urandom(32)
    sealed = seal_deterministic(key, b"ada", b"row|1")
    assert sealed == seal_deterministic(key, b"ada", b"row|1")
    assert open_sealed(key, sealed, b"row|1") == b"ada"
    # Another message, another place or another key: another nonce.
    nonces = {
        seal_deterministic(key, b"adb", b"row|1")[:NONCE_BYTES],
        seal_deterministic(key, b"ada", b"row|2")[:NONCE_BYTES],
        seal_deterministic(os.urandom(32), b"ada", b"row|1")[:NONCE_BYTES],
        sealed[:NONCE_BYTES],
    }
    assert len(nonces) == 4
    # The length prefix keeps the aad/plaintext split unambiguous.
    assert seal_deterministic(key, b"1ada", b"row|")[:NONCE_BYTES] != sealed[:NONCE_BYTES]
    with pytest.raises(SealOpenError):
        open_sealed(key, sealed, b"row|2")
    with pytest.raises(SealOpenError):
        open_sealed(key, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"row|1")
    with pytest.raises(SealOpenError):
        open_sealed(key, sealed[:10], b"row|1")
