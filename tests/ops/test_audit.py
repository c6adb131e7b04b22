"""The audit log is hash-chained: an edited, removed or reordered record is found."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from swapline.ops.audit import AuditError, AuditLog


def _append_many(path: str, who: str, n: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append({"conversion": f"{who}-{i}", "watermark_payload": f"{i:016x}"})


def test_a_chain_of_records_verifies_and_finds_by_payload_and_hash(tmp_path):
    log = AuditLog.in_home(tmp_path)
    assert log.verify().ok and log.verify().records == 0
    first = log.append({"conversion": "c1", "watermark_payload": "00000000000000ab", "output_sha256": "aa"})
    second = log.append({"conversion": "c2", "watermark_payload": "00000000000000cd", "output_sha256": "bb"})
    assert second["prev"] == first["hash"] and second["seq"] == 2
    assert log.verify().ok and log.verify().records == 2
    assert log.find(payload=0xCD)["conversion"] == "c2" and log.find(sha256="aa")["conversion"] == "c1"
    assert log.find(payload=0xEF) is None and log.payloads() == [0xAB, 0xCD]


@pytest.mark.parametrize("tamper", ["edit", "remove", "swap"])
def test_tampering_with_a_past_record_is_detected(tmp_path, tamper):
    log = AuditLog.in_home(tmp_path)
    for i in range(4):
        log.append({"conversion": f"c{i}", "model_version": "m1"})
    lines = log.path.read_text().splitlines()
    if tamper == "edit":  # a past record names another model, everything else kept
        record = json.loads(lines[1])
        record["model_version"] = "m2"
        lines[1] = json.dumps(record, sort_keys=True)
    elif tamper == "remove":
        del lines[1]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    log.path.write_text("\n".join(lines) + "\n")
    check = log.verify()
    assert not check.ok and check.broken_at == 2, check
    with pytest.raises(AuditError, match="broken at line 2"):
        log.append({"conversion": "after"})  # nothing is chained onto a tampered log
    assert len(log.path.read_text().splitlines()) == len(lines)


def test_concurrent_appends_keep_one_chain(tmp_path):
    path = tmp_path / "audit" / "conversions.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), who, 25)) for who in ("a", "b")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    check = AuditLog(path).verify()
    assert check.ok and check.records == 50, check
