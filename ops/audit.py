"""The conversion audit log: one JSON line per conversion, append-only and hash-chained.

Each record carries `seq`, `prev` (the previous record's hash) and `hash` = sha256 of its own
canonical JSON without `hash`. Editing, removing or reordering a past record breaks the chain at
that record, which `verify` reports. The chain proves the log was not edited after the fact by
someone who cannot rewrite every later record (keep a copy of the last hash elsewhere to rule
out a full rewrite). `swapline verify` uses the log to name the conversion a watermark payload
or a file hash belongs to.

Appends hold an exclusive lock on the log (several conversions may finish at once) and are
flushed to disk before the lock is released.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from swapline.ops.watermark import payload_hex

logger = logging.getLogger(__name__)

GENESIS = "0" * 64


class AuditError(RuntimeError):
    """The audit log cannot be appended to (unwritable, or its chain is already broken)."""


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    records: int
    broken_at: int | None = None  # line number (1-based) of the first record that does not chain
    reason: str = ""


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    """The log file at `path` (by convention `$SWAPLINE_HOME/audit/conversions.jsonl`)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def in_home(cls, home: Path) -> "AuditLog":
        return cls(Path(home) / "audit" / "conversions.jsonl")

    def append(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Append one record (facts plus time, seq, prev, hash) and return it. Refuses when the
        chain is already broken: a record appended after a tampered one would look legitimate."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            check, last = _walk(handle)
            if not check.ok:
                raise AuditError(f"audit log {self.path} is broken at line {check.broken_at} ({check.reason}); "
                                 "nothing appended: restore it from a backup or move it aside")
            record = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **facts,
                      "seq": check.records + 1, "prev": last}
            record["hash"] = _digest(record)
            handle.seek(0, os.SEEK_END)
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        logger.info("audit log: record %d (%s)", record["seq"], facts.get("conversion", ""))
        return record

    def records(self) -> list[dict[str, Any]]:
        """Every record that parses, in order (a damaged line is skipped here; `verify` names it)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def verify(self) -> ChainCheck:
        if not self.path.is_file():
            return ChainCheck(ok=True, records=0)
        with open(self.path, encoding="utf-8") as handle:
            return _walk(handle)[0]

    def find(self, *, payload: int | None = None, sha256: str | None = None) -> dict[str, Any] | None:
        """The latest record with this watermark payload or output file hash."""
        for record in reversed(self.records()):
            if payload is not None and record.get("watermark_payload") == payload_hex(payload):
                return record
            if sha256 is not None and record.get("output_sha256") == sha256:
                return record
        return None

    def payloads(self) -> list[int]:
        return [int(r["watermark_payload"], 16) for r in self.records() if r.get("watermark_payload")]


def _lines(handle) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(handle, 1):
        if line.strip():
            yield number, line


def _walk(handle) -> tuple[ChainCheck, str]:
    """(the chain's state, the last record's hash)."""
    last, count = GENESIS, 0
    for number, line in _lines(handle):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return ChainCheck(False, count, number, "not JSON"), last
        if record.get("prev") != last or record.get("seq") != count + 1:
            return ChainCheck(False, count, number, "does not follow the previous record"), last
        if record.get("hash") != _digest(record):
            return ChainCheck(False, count, number, "edited after it was written (hash mismatch)"), last
        last, count = record["hash"], count + 1
    return ChainCheck(True, count), last
