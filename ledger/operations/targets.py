"""Backup targets as the operator writes them: a path, or a URL (file://, s3://, azure://,
gs://). Parsed once, named in every error, never echoed with their query (credentials)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from ledger.config import ConfigError

CLOUD_SCHEMES = {"s3": "s3", "azure": "azure", "gs": "gcs", "gcs": "gcs"}


@dataclass(frozen=True)
class Target:
    index: int  # 1-based, pgBackRest's repoN
    kind: str  # "posix" | "s3" | "azure" | "gcs"
    path: str  # the folder (posix) or the prefix inside the bucket/container
    bucket: str = ""
    options: tuple[tuple[str, str], ...] = ()  # repoN-<kind>-<name> settings from the query

    @property
    def local_path(self) -> Path:
        if self.kind != "posix":
            raise ConfigError(
                f"backup target {self.index} ({self.label}): SQLite snapshots go to folders; "
                "copy the local folder off-site (rclone, aws s3 sync) or mount the bucket"
            )
        return Path(self.path)

    @property
    def label(self) -> str:
        """A name for messages: never the URL's query (it may hold a key)."""
        if self.kind == "posix":
            return self.path
        return f"{self.kind}://{self.bucket}{self.path}"


def parse_target(text: str, index: int) -> Target:
    parts = urlsplit(text)
    if parts.scheme in ("", "file"):
        raw = unquote(parts.path) if parts.scheme == "file" else text
        if not raw:
            raise ConfigError(f"LEDGER_BACKUP_REPOS: target {index} is empty")
        return Target(index, "posix", str(Path(raw).expanduser().absolute()))
    kind = CLOUD_SCHEMES.get(parts.scheme)
    if kind is None or not parts.hostname:
        raise ConfigError(
            f"LEDGER_BACKUP_REPOS: target {index}: expected a path or "
            "s3://bucket/prefix, azure://container/prefix, gs://bucket/prefix"
        )
    options = tuple((key, value) for key, value in parse_qsl(parts.query))
    for key, _ in options:
        if not key.replace("-", "").isalnum():
            raise ConfigError(f"LEDGER_BACKUP_REPOS: target {index}: bad option name {key!r}")
    return Target(index, kind, unquote(parts.path) or "/", parts.hostname, options)


def parse_targets(repos: tuple[str, ...]) -> list[Target]:
    return [parse_target(text, index) for index, text in enumerate(repos, 1)]


def pick(targets: list[Target], wanted: str | None) -> Target:
    """`--from`/`--repo`: a target's number, or its path/URL as configured or any folder
    (a copy brought back from off-site)."""
    if wanted is None:
        return targets[0]
    if wanted.isdigit():
        number = int(wanted)
        if not 1 <= number <= len(targets):
            raise ConfigError(f"repo: there is no backup target {number} (1..{len(targets)})")
        return targets[number - 1]
    given = parse_target(wanted, 0)
    for target in targets:
        if (target.kind, target.bucket, target.path) == (given.kind, given.bucket, given.path):
            return target
    return given
