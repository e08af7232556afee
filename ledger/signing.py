"""The ledger's Ed25519 signing identity, and owner-only files for local secrets.

One key signs everything the ledger vouches for (erasure certificates, Merkle tree heads), so
a verifier needs exactly one public key. Ed25519 because signatures are deterministic, small
(64 bytes) and have no parameters to get wrong.

The private-file helpers live here because this module has no dependencies of its own; the
local key-encryption-key file uses them too.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class InsecureKeyFileError(PermissionError):
    """A secret file is reachable by group or others (or is not a regular file).

    Refused rather than silently fixed: a secret that was readable may already have been
    read, and an operator should decide whether to rotate it.
    """


class SigningKeyError(ValueError):
    """The signing key file (or a public key given for verification) is not a usable
    Ed25519 key. Messages name the file, never its content."""


# Owner-only secret files ----------------------------------------------------------------


def ensure_private_dir(directory: Path) -> None:
    """Create `directory` (mode 0700) if missing; an existing directory is left alone."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def check_private_file(path: Path) -> None:
    """Refuse a secret file that group or others may read or write (writable would let
    someone substitute their own key)."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise InsecureKeyFileError(f"{path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise InsecureKeyFileError(
            f"{path} is accessible by group or others (mode {mode:04o}); "
            f"it must be owner-only: chmod 600 {path} (and consider rotating the key)"
        )


def create_private_file(path: Path, data: bytes) -> bool:
    """Publish `data` at `path` (mode 0600) unless a file is already there.

    The content is written to a temporary file first and then hard-linked into place, so a
    concurrent reader never sees a half-written secret and two processes starting at once
    cannot both create one. Returns False when another file was already there.
    """
    ensure_private_dir(path.parent)
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def replace_private_file(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data` (mode 0600): readers see the old or the new
    file, never a mix, and a crash leaves one of the two."""
    ensure_private_dir(path.parent)
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _write_temp(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def fsync_dir(directory: Path) -> None:
    """Make the new directory entry durable: losing a freshly rotated key after a crash
    would leave keys wrapped under it unreadable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# Signing ----------------------------------------------------------------------------------


class LedgerSigner:
    """Holds the ledger's private key; hands out signatures and the public key only."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._public_key = private_key.public_key()

    @classmethod
    def generate(cls) -> LedgerSigner:
        """An in-memory identity (tests, tools); production uses `load_or_create`."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path, *, setting: str) -> LedgerSigner:
        """Load the key at `path`, never creating one: a new key here would sign what the
        other side (the server, a verifier) does not accept. MissingSecretError names the
        file and the `setting` that locates it."""
        from ledger.store_state import MissingSecretError  # a leaf module: no cycle

        if not path.exists():
            raise MissingSecretError(
                f"no key at {path} (set {setting}, or LEDGER_DATA_DIR to the ledger's folder)"
            )
        return cls.load_or_create(path)

    @classmethod
    def load_or_create(cls, path: Path) -> LedgerSigner:
        """Load the PEM PKCS8 key at `path`, creating it (mode 0600) on first use.

        An existing file that group or others can reach is refused (InsecureKeyFileError).
        """
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            if create_private_file(path, pem):
                return cls(key)
            # Another process created it first: use theirs, so there is one identity.
        check_private_file(path)
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            # `from None`: the parser's message may quote the file's content.
            raise SigningKeyError(
                f"{path} does not hold an unencrypted PEM PKCS8 private key"
            ) from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise SigningKeyError(f"{path} holds a private key that is not Ed25519")
        return cls(loaded)

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)

    def public_key_pem(self) -> str:
        return _public_pem(self._public_key)

    def derive_key(self, info: bytes) -> bytes:
        """A 32-byte secret for one purpose (`info`), derived (HKDF-SHA256) from the
        private key: secrets the database must not hold, without another key file to keep.
        Distinct `info` values give independent keys; none reveals the signing key."""
        raw = self._private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(raw)

    def key_id(self) -> str:
        return _key_id(self._public_key)

    def __repr__(self) -> str:
        return f"LedgerSigner(key_id={self.key_id()!r})"


def load_public_key(public_key_pem: str) -> Ed25519PublicKey:
    """Parse a SubjectPublicKeyInfo PEM; SigningKeyError if it is not an Ed25519 key."""
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise SigningKeyError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("the public key is not an Ed25519 key")
    return key


def public_key_id(public_key_pem: str) -> str:
    """The key id (as `LedgerSigner.key_id`) of a public key given as PEM."""
    return _key_id(load_public_key(public_key_pem))


def signed_by(public_key_pem: str, key_id: str, message: bytes, signature: bytes) -> bool:
    """True when `signature` over `message` is by the key `public_key_pem`, whose key id the
    signed document names as `key_id` (tree heads, restore statements)."""
    try:
        if public_key_id(public_key_pem) != key_id:
            return False
        return verify_signature(public_key_pem, message, signature)
    except (ValueError, SigningKeyError):
        return False


def verify_signature(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    """True only if `signature` is a valid Ed25519 signature of `message`.

    A wrong or altered signature or message gives False; a public key that is not an
    Ed25519 PEM raises SigningKeyError, because that is a configuration mistake, not a
    forgery, and should not be reported as one.
    """
    key = load_public_key(public_key_pem)
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
