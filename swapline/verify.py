"""`swapline verify FILE [--json]`: is this file swapline output, and which conversion made it?

Three independent witnesses, each reported on its own:
- the C2PA manifest (Trusted / Valid / Invalid / none, with the validation codes), trusting this
  home's local CA and $SWAPLINE_SIGNING_ANCHORS when set;
- the invisible watermark (found, bits matched, payload), looked for in a child process (the file
  is untrusted media), against the payloads of this home's audit log;
- the sidecar `<name>.provenance.json` next to the file, when there is one (does its hash match?).
The audit log (hash-chained) names the conversion by watermark payload or by file hash.
Exit status 0 when the file is recognised as swapline output by the manifest or the watermark.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ANCHORS_ENV = "SWAPLINE_SIGNING_ANCHORS"
DETECT_TIMEOUT_S = 300.0


def _anchors(home: Path) -> bytes | None:
    pems = [home / "signing" / "ca.pem"]
    if os.environ.get(ANCHORS_ENV):
        pems.append(Path(os.environ[ANCHORS_ENV]))
    found = b"".join(p.read_bytes() for p in pems if p.is_file())
    return found or None


def _watermark(path: Path, payloads: list[int]) -> dict[str, Any]:
    from swapline.ops.sandbox import run_isolated
    from swapline.ops.watermark import detect_file, payload_hex

    try:
        found = run_isolated(detect_file, path, payloads, timeout=DETECT_TIMEOUT_S, label=f"watermark of {path.name}")
    except Exception as exc:  # noqa: BLE001 - a crash, a timeout, not a decodable video or image: no mark found
        return {"watermark_found": False, "watermark_bits_matched": None, "watermark_payload": None,
                "watermark_error": str(exc).splitlines()[0]}
    payload = found.expected_best if found.found and found.expected_best is not None else found.payload
    return {"watermark_found": bool(found.found), "watermark_bits_matched": found.bits_matched,
            "watermark_payload": payload_hex(payload) if payload is not None else None,
            "watermark_frames": found.frames, "watermark_agreement": round(float(found.agreement), 4)}


def _sidecar(path: Path, sha256: str) -> dict[str, Any] | None:
    sidecar = path.with_name(f"{path.stem}.provenance.json")
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {"path": str(sidecar), "readable": False, "error": str(exc)}
    return {"path": str(sidecar), "readable": True, "synthetic": record.get("synthetic") is True,
            "conversion": record.get("conversion"), "hash_matches": record.get("output_sha256") == sha256}


def verify_file(path: Path, home: Path) -> dict[str, Any]:
    """Everything `swapline verify` reports, as one JSON-able dict."""
    from swapline.ops.audit import AuditLog
    from swapline.ops.c2pa_manifest import read_manifest
    from swapline.ops.storage import sha256_file

    path = Path(path)
    sha256 = sha256_file(path)
    manifest = read_manifest(path, _anchors(home))
    log = AuditLog.in_home(home)
    chain = log.verify()
    marks = _watermark(path, log.payloads())
    record = log.find(sha256=sha256) or (log.find(payload=int(marks["watermark_payload"], 16))
                                         if marks["watermark_found"] and marks["watermark_payload"] else None)
    claimed = (manifest.swapline or {}).get("conversion")
    return {
        "file": str(path), "sha256": sha256,
        "c2pa_state": manifest.state, "c2pa_codes": manifest.codes, "c2pa_signer": manifest.signer,
        "c2pa_timestamp": manifest.timestamp, "digital_source_type": manifest.digital_source_type,
        "c2pa_conversion": claimed, **marks,
        "conversion": record["conversion"] if record else None,
        "audit": {"log": str(log.path), "chain_ok": chain.ok, "records": chain.records, "broken_at": chain.broken_at,
                  "record": record and {k: record.get(k) for k in ("seq", "time", "conversion", "run_id", "model_version",
                                                                   "output_sha256", "watermark_payload")},
                  "matched_by": None if not record else "file hash" if record.get("output_sha256") == sha256 else "watermark"},
        "sidecar": _sidecar(path, sha256),
        "recognised": manifest.state in ("Trusted", "Valid") or bool(marks["watermark_found"]),
    }


def verify_lines(result: dict[str, Any]) -> list[str]:
    """The result in words, one witness per line."""
    codes = f" ({', '.join(result['c2pa_codes'])})" if result["c2pa_codes"] else ""
    lines = [f"{result['file']}",
             f"  C2PA manifest: {result['c2pa_state']}{codes}"
             + (f", signed by {result['c2pa_signer']}, timestamp {result['c2pa_timestamp']}" if result["c2pa_signer"] else "")]
    if result["watermark_found"]:
        lines.append(f"  watermark: found, {result['watermark_bits_matched']}/64 bits, payload {result['watermark_payload']}")
    else:
        lines.append("  watermark: not found" + (f" ({result['watermark_error']})" if result.get("watermark_error") else
                                                  f" (best {result['watermark_bits_matched'] or 0}/64 bits)"))
    audit = result["audit"]
    chain = "intact" if audit["chain_ok"] else f"BROKEN at line {audit['broken_at']}"
    named = (f"conversion {result['conversion']} (run {audit['record']['run_id']}, {audit['record']['time']}; "
             f"matched by {audit['matched_by']})") if result["conversion"] else "no conversion of this home matches"
    lines.append(f"  audit log: {named}; chain {chain} ({audit['records']} records)")
    sidecar = result["sidecar"]
    if sidecar:
        state = ("hash matches" if sidecar.get("hash_matches") else "HASH DIFFERS: the file changed after signing"
                 ) if sidecar.get("readable") else f"unreadable ({sidecar.get('error')})"
        lines.append(f"  sidecar: {sidecar['path']}: {state}")
    lines.append("  => swapline output (synthetic media)" if result["recognised"] else "  => not recognised as swapline output")
    return lines
