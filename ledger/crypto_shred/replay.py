"""Replaying the erasure journal when the ledger opens, and catching the journal up.

Runs in `open_ledger` before the re-shred and before anything is served. Cheap when
nothing is missing: the journal files are read (one line per erasure ever made) and their
customer ids compared with the log-derived erasure registry, which is loaded anyway.

- A journal entry whose customer the log does not record as erased is an erasure a restore
  lost. Its signature is checked with the ledger's public key; a forged or altered entry is
  refused (logged as an integrity problem, counted, never applied). A valid one is recorded
  again (`CustomerLedger.reapply_erasure`: an Erased event whose reason says it was
  re-applied from the journal, and the key destroyed). A customer the restored log does not
  know (registered after the backup) gets nothing recorded: only counted, since its events
  were lost with the restore.
- An erasure the log holds but a journal file lacks (its write failed, or the file is new)
  is appended to that file: the original certificate when another file has it, else one
  rebuilt from the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from ledger.crypto_shred import journal
from ledger.crypto_shred.certificate import SignedCertificate
from ledger.domain.errors import CustomerNotFound

if TYPE_CHECKING:
    from ledger.application import CustomerLedger

log = logging.getLogger("ledger.erasure_journal")


@dataclass
class ReplayReport:
    entries: int = 0  # distinct customers in the journal files
    reapplied: list[UUID] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # customer ids of forged/altered entries
    unknown: int = 0  # journaled customers the log does not know (lost with the restore)
    journaled_from_log: int = 0  # certificates appended to files that lacked them
    malformed_lines: int = 0
    unwritable: list[str] = field(default_factory=list)  # files the catch-up could not write

    @property
    def integrity_problems(self) -> int:
        return len(self.refused) + self.malformed_lines

    def to_json(self) -> dict[str, object]:
        return {
            "entries": self.entries,
            "reapplied": [str(c) for c in self.reapplied],
            "refused": self.refused,
            "unknown_customers": self.unknown,
            "journaled_from_log": self.journaled_from_log,
            "malformed_lines": self.malformed_lines,
            "unwritable": self.unwritable,
        }


def replay_journal(ledger: CustomerLedger) -> ReplayReport:
    """Apply what the journal has and the log lacks, then journal what the log has and
    the journal lacks. Never raises for the journal's content; a file that cannot be
    written is logged (the erasures are in the log, the next start tries again)."""
    paths = ledger.settings.erasure_journal_paths
    files = [journal.read(path) for path in paths]
    report = ReplayReport()
    ledger.erasures.refresh()
    erased = {str(c) for c in ledger.erasures.erased_ids()}
    public_key = ledger.signer.public_key_pem()
    # The first entry seen per customer: a raw line (not parsed: its customer is erased in
    # the log, the cheap path) or a parsed certificate (checked before it was applied).
    originals: dict[str, bytes | SignedCertificate] = {}
    for file in files:
        if file.error is not None:
            log.error("erasure journal %s cannot be read: %s", file.path, file.error)
        malformed: list[int] = []
        for number, line, quick in file.lines:
            if quick is not None and (quick in erased or quick in originals):
                originals.setdefault(quick, line)
                continue
            entry = file.parse(line)
            if entry is None:
                malformed.append(number)
                continue
            cid = entry.certificate.customer_id
            if cid in originals:
                continue
            if cid in erased:
                originals[cid] = line
                continue
            if not entry.verify(public_key):
                if cid not in report.refused:
                    report.refused.append(cid)
                    log.error(
                        "erasure journal %s: the entry for customer %s is not signed by this "
                        "ledger's key (forged or altered); not applied",
                        file.path,
                        cid,
                    )
                continue
            originals[cid] = entry
            try:
                ledger.reapply_erasure(entry.certificate)
            except CustomerNotFound:
                report.unknown += 1
                continue
            except ValueError:  # a certificate naming no valid customer id
                report.refused.append(cid)
                log.error("erasure journal %s: an entry names no valid customer id", file.path)
                continue
            report.reapplied.append(UUID(cid))
            erased.add(cid)
            log.warning("re-applied the journaled erasure of customer %s", cid)
        if malformed:
            report.malformed_lines += len(malformed)
            log.error(
                "erasure journal %s: lines %s are not signed erasure certificates "
                "(integrity problem; ignored)",
                file.path,
                ",".join(map(str, malformed[:20])),
            )
    report.entries = len(originals)
    _catch_up(ledger, files, erased, originals, public_key, report)
    if report.reapplied or report.unknown or report.integrity_problems:
        log.warning(
            "erasure journal replayed: %d erasures re-applied, %d customers unknown to the "
            "restored log, %d entries refused, %d malformed lines",
            len(report.reapplied),
            report.unknown,
            len(report.refused),
            report.malformed_lines,
        )
    return report


def _catch_up(
    ledger: CustomerLedger,
    files: list[journal.JournalFile],
    erased: set[str],
    originals: dict[str, bytes | SignedCertificate],
    public_key: str,
    report: ReplayReport,
) -> None:
    rebuilt: dict[str, SignedCertificate | None] = {}
    for file in files:
        if file.error is not None:
            report.unwritable.append(str(file.path))
            continue
        missing = sorted(erased - file.customer_ids())
        if not missing:
            continue
        lines: list[SignedCertificate] = []
        for cid in missing:
            original = originals.get(cid)
            if isinstance(original, bytes):
                original = file.parse(original)
            if original is not None and original.verify(public_key):
                lines.append(original)
                continue
            if cid not in rebuilt:
                rebuilt[cid] = ledger.certificate_from_log(UUID(cid))
            certificate = rebuilt[cid]
            if certificate is not None:
                lines.append(certificate)
        try:
            journal.append([file.path], lines)
        except journal.JournalWriteFailed as exc:
            report.unwritable.append(str(file.path))
            log.error(
                "erasure journal %s lacks %d erasures the log holds and cannot be written "
                "(%s); the next start tries again",
                file.path,
                len(lines),
                exc.failures[0][1],
            )
            continue
        report.journaled_from_log += len(lines)
        log.warning("erasure journal %s: %d erasures journaled from the log", file.path, len(lines))
