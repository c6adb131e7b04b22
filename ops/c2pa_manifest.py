"""Content Credentials (C2PA) on a converted MP4: signed offline, read back offline.

The manifest says what the video is: the target footage opened (a `parentOf` ingredient), then
edited with a trained model (IPTC `compositeWithTrainedAlgorithmicMedia`), optionally
watermarked (which C2PA only accepts next to a `c2pa.soft-binding` assertion naming the
watermark), plus our own facts under `org.swapline.conversion`. c2pa writes it as a `uuid` box
after `ftyp` and hashes every other box, so signing must be the last write: one changed byte
reads back `Invalid`, and a remux drops the manifest. There is no time-stamp authority offline;
both the assertion and the read-back say `timestamp: none (offline)`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swapline.ops.provenance import DIGITAL_SOURCE_TYPE
from swapline.ops.signing_identity import SigningError, SigningIdentity
from swapline.ops.watermark import payload_hex

logger = logging.getLogger(__name__)

ASSERTION_LABEL = "org.swapline.conversion"
NO_TIMESTAMP = "none (offline)"
# Containers c2pa can read an ingredient from; any other parent is recorded by name only.
MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".avi": "video/x-msvideo"}


@dataclass
class ManifestInfo:
    state: str  # "Trusted", "Valid" (intact, signer not in the anchors), "Invalid" or "none"
    codes: list[str] = field(default_factory=list)  # validation failure codes
    actions: list[str] = field(default_factory=list)
    digital_source_type: str | None = None
    swapline: dict[str, Any] | None = None  # our org.swapline.conversion assertion
    soft_binding: dict[str, Any] | None = None
    signer: str | None = None  # "common name (issuer)" of the signing certificate
    timestamp: str | None = None  # the TSA time, or "none (offline)"
    parent: str | None = None  # title of the parentOf ingredient
    error: str | None = None  # why the manifest could not be read at all


def offline_settings(anchors_pem: bytes | None) -> dict[str, Any]:
    """c2pa settings that never touch the network: no remote manifests, no OCSP."""
    settings: dict[str, Any] = {
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
        "builder": {"thumbnail": {"enabled": False}},  # no video thumbnails; keeps the manifest small
    }
    if anchors_pem:
        settings["trust"] = {"user_anchors": anchors_pem.decode("ascii")}  # added to, not replacing, c2pa's list
    return settings


def top_level_boxes(path: Path) -> list[tuple[str, int, int]]:
    """(type, offset, size) of each top-level ISO BMFF box; stops at the first malformed header."""
    boxes, total = [], Path(path).stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        while offset + 8 <= total:
            handle.seek(offset)
            size, kind = struct.unpack(">I4s", handle.read(8))
            if size == 1:  # 64-bit size follows the type
                size = struct.unpack(">Q", handle.read(8))[0]
            elif size == 0:  # box runs to the end of the file
                size = total - offset
            if size < 8 or offset + size > total:
                break
            boxes.append((kind.decode("latin-1"), offset, size))
            offset += size
    return boxes


def _check_plain_mp4(path: Path) -> None:
    kinds = [kind for kind, _, _ in top_level_boxes(path)]
    if not kinds or kinds[0] != "ftyp":
        raise SigningError(f"{path} is not an MP4 (no ftyp box first)")
    if "moof" in kinds:
        # A fragmented file grows by fragments after signing; the hard binding would not cover them.
        raise SigningError(f"{path} is a fragmented MP4; write a plain (non-fragmented) MP4 before signing")


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("swapline")
    except PackageNotFoundError:
        return "unknown"


def _soft_binding(watermark: dict[str, Any]) -> dict[str, Any]:
    alg, payload = watermark.get("alg"), watermark.get("payload", "")
    if isinstance(payload, int):  # ops/watermark.py's 64-bit payloads
        payload = payload_hex(payload)
    if not alg or not payload:
        raise ValueError(f"watermark needs 'alg' and a hex 'payload', got {watermark!r}")
    bytes.fromhex(payload)  # the payload must be hex; raises ValueError otherwise
    # `pad` is required by c2pa's SoftBinding type; empty is the usual value.
    return {"alg": alg, "blocks": [{"scope": {}, "value": payload.lower()}], "pad": []}


def _definition(title: str, assertion: dict[str, Any], watermark: dict[str, Any] | None) -> dict[str, Any]:
    agent = {"name": "swapline", "version": _software_version()}
    actions: list[dict[str, Any]] = [
        {"action": "c2pa.opened", "parameters": {"ingredientIds": ["target"]}},
        {"action": "c2pa.edited", "digitalSourceType": DIGITAL_SOURCE_TYPE, "softwareAgent": agent,
         "description": "A face in the target video was replaced by a trained face-swap model."},
    ]
    facts = {**assertion}
    facts.setdefault("timestamp", NO_TIMESTAMP)  # no time-stamp authority offline: say so
    facts.setdefault("signed_at_local_clock", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    assertions: list[dict[str, Any]] = [{"label": ASSERTION_LABEL, "data": facts}]
    if watermark is not None:
        actions.append({"action": "c2pa.watermarked", "softwareAgent": agent})
        assertions.append({"label": "c2pa.soft-binding", "data": _soft_binding(watermark)})
    return {"title": title, "format": "video/mp4", "claim_generator_info": [agent],
            "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}, *assertions]}


def _sign_into(tmp: Path, src: Path, identity: SigningIdentity, definition: dict[str, Any], parent: Path) -> None:
    import c2pa

    # The target video is the `parentOf` ingredient: read by c2pa when it can (a manifest of its
    # own travels along), otherwise recorded by name and format only.
    ingredient = {"title": parent.name, "relationship": "parentOf", "label": "target"}
    mime = MIME.get(parent.suffix.lower())
    readable = bool(mime) and parent.is_file()
    if not readable:
        if not parent.is_file():
            logger.warning("parent video %s is gone; recording it by name only", parent)
        definition = {**definition, "ingredients": [{**ingredient, "format": mime or "application/octet-stream"}]}
    info = c2pa.C2paSignerInfo(identity.alg, identity.chain_pem, identity.key_pem, None)  # no TSA offline
    with (c2pa.Context.from_dict(offline_settings(identity.anchors_pem)) as context,
          c2pa.Builder(definition, context=context) as builder):  # a Builder signs once
        if readable:
            with open(parent, "rb") as handle:
                builder.add_ingredient(ingredient, mime, handle)
        with c2pa.Signer.from_info(info) as signer, open(src, "rb") as source, open(tmp, "w+b") as dest:
            builder.sign(signer, "video/mp4", source, dest)
            dest.flush()
            os.fsync(dest.fileno())


def sign_mp4(src: Path, dst: Path, identity: SigningIdentity, *, title: str, parent: Path,
             assertion: dict[str, Any], watermark: dict[str, Any] | None = None) -> str:
    """Write `src` with a signed manifest to `dst` (atomically); return the signed file's sha256.

    Must be the last write to the file. Raises SigningError, leaving `dst` untouched, when the
    file, key or certificate cannot be signed with.
    """
    import c2pa

    src, dst, parent = Path(src), Path(dst), Path(parent)
    _check_plain_mp4(src)
    definition = _definition(title, assertion, watermark)
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".signing")
    os.close(fd)
    tmp = Path(name)
    try:
        _sign_into(tmp, src, identity, definition, parent)
        shutil.copymode(src, tmp)  # mkstemp made it 0600; the video keeps the source's mode
        with open(tmp, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        os.replace(tmp, dst)
    except c2pa.C2paError as e:
        raise SigningError(f"C2PA signing of {src} with {identity.source} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("signed %s (C2PA, signer %s)", dst, identity.source)
    return digest


def _codes(store: dict[str, Any]) -> list[str]:
    """Failure codes of the active manifest (an ingredient's own findings are not ours)."""
    results = store.get("validation_results") or {}
    found = [s.get("code") for s in (results.get("activeManifest") or {}).get("failure", [])]
    found += [s.get("code") for s in store.get("validation_status") or []]
    return list(dict.fromkeys(c for c in found if c))  # unique, in order


def _summary(store: dict[str, Any]) -> ManifestInfo:
    manifest = (store.get("manifests") or {}).get(store.get("active_manifest") or "", {})
    assertions = {a.get("label", ""): a.get("data") for a in manifest.get("assertions", [])}
    actions = next((d.get("actions", []) for label, d in assertions.items() if label.startswith("c2pa.actions")), [])
    signature = manifest.get("signature_info") or {}
    parents = [i.get("title") for i in manifest.get("ingredients", []) if i.get("relationship") == "parentOf"]
    signer = signature.get("common_name")
    if signer and signature.get("issuer"):
        signer = f"{signer}, {signature['issuer']}"
    return ManifestInfo(
        state=store.get("validation_state") or ("Invalid" if _codes(store) else "Valid"),
        codes=_codes(store),
        actions=[a.get("action") for a in actions],
        digital_source_type=next((a["digitalSourceType"] for a in actions if a.get("digitalSourceType")), None),
        swapline=assertions.get(ASSERTION_LABEL),
        soft_binding=assertions.get("c2pa.soft-binding"),
        signer=signer,
        timestamp=signature.get("time") or NO_TIMESTAMP,
        parent=parents[0] if parents else None,
    )


def read_manifest(path: Path, anchors_pem: bytes | None = None) -> ManifestInfo:
    """Read and verify a file's manifest offline; never raises for an unsigned or damaged file."""
    import c2pa

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with c2pa.Context.from_dict(offline_settings(anchors_pem)) as context, open(path, "rb") as handle:
            with c2pa.Reader(MIME.get(path.suffix.lower()), handle, context=context) as reader:
                store = json.loads(reader.json())
    except c2pa.C2paError.ManifestNotFound:
        return ManifestInfo(state="none")
    except c2pa.C2paError as e:
        # A manifest (or container) too damaged to parse: as untrustworthy as a failed check.
        return ManifestInfo(state="Invalid", codes=["manifest.unreadable"], error=str(e))
    return _summary(store)
