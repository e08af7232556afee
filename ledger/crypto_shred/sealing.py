"""Sealing: AES-256-GCM under a customer's own data key, with the place a ciphertext belongs
as associated data. One format for every stored copy of personal data — events (through the
mapper) and projection rows alike — so destroying one key shreds all of them.

Sealed form: 12-byte nonce followed by the GCM ciphertext and its 16-byte tag.

Two ways to pick the nonce:

* `seal` draws it at random: right for events, which are written once and never again.
* `seal_deterministic` derives it from the plaintext and the associated data (a synthetic
  nonce, as in SIV mode): `HMAC-SHA256(K_n, len(aad) ‖ aad ‖ plaintext)` truncated to 12
  bytes, where `K_n` is a sub-key derived from the data key (HKDF-Expand). Projection rows need
  it: a row rebuilt from the log must come out byte-identical to the row built incrementally.
  It is safe because GCM breaks only when one nonce meets two *different* messages under one
  key; here the nonce is a pseudo-random function of the whole (associated data, message)
  pair, so equal nonces mean an equal pair (which gives an equal ciphertext and reveals
  only "this is the same row at the same version") or a 96-bit PRF collision (~2^-96 per
  pair; a customer's key seals a few thousand rows in its life, far below the ~2^48 birthday
  bound). The nonce key is separate from the encryption key (HKDF), so the HMAC never sees
  the AES key itself. AES-GCM-SIV (RFC 8452) would give the same property; we keep plain
  AES-256-GCM so that events and rows share one cipher, one format and one set of helpers,
  and nothing depends on an OpenSSL new enough to offer GCM-SIV.
"""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
TAG_BYTES = 16
_NONCE_KEY_INFO = b"ledger.synthetic-nonce.v1"


class SealOpenError(Exception):
    """A sealed value does not open under this key and associated data: it was altered,
    or moved from where it belongs. Carries no data."""


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt with a random nonce (for values written once: events)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def seal_many(items: list[tuple[bytes, bytes, bytes]]) -> list[bytes]:
    """`seal` for several (key, plaintext, aad) at once: one call to the OS for all the
    random nonces (an event sealed per data category seals up to eight parts)."""
    randomness = os.urandom(NONCE_BYTES * len(items))
    sealed = []
    for index, (key, plaintext, aad) in enumerate(items):
        nonce = randomness[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
        sealed.append(nonce + AESGCM(key).encrypt(nonce, plaintext, aad))
    return sealed


def synthetic_nonce(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """A nonce that is a pseudo-random function of (aad, plaintext) under a sub-key of
    `key`; the length prefix keeps the split between aad and plaintext unambiguous."""
    # HKDF-Expand (RFC 5869) for one 32-byte block; the data key is uniformly random
    # already, so it serves as the pseudo-random key without an Extract step.
    # `hmac.digest` is the one-shot (C) form of `hmac.new(...).digest()`: same bytes.
    nonce_key = hmac.digest(key, _NONCE_KEY_INFO + b"\x01", "sha256")
    message = b"".join((len(aad).to_bytes(8, "big"), aad, plaintext))
    return hmac.digest(nonce_key, message, "sha256")[:NONCE_BYTES]


def seal_deterministic(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt so that the same (key, aad, plaintext) always gives the same bytes (for
    rows that must be reproducible from the log; see the module docstring for why this is
    safe)."""
    nonce = synthetic_nonce(key, plaintext, aad)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt either form; SealOpenError when the bytes or their place do not match."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise SealOpenError("sealed value is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise SealOpenError("sealed value does not open here") from None
