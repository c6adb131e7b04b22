"""The last steps of every conversion: sign the watermarked file (C2PA), then check what was
written the way a stranger would, and fail closed. There is no switch to skip any of it.

    watermark (in the frames, during encoding: ops.watermark via ops.video_out)
    -> sign_mp4 (the last write to the file)
    -> read the manifest back (Trusted against our anchors) and find the watermark in the file
    -> the caller writes the sidecar (with the signed file's hash) and appends the audit record
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from swapline.ops.c2pa_manifest import read_manifest, sign_mp4
from swapline.ops.signing_identity import SigningIdentity
from swapline.ops.watermark import ALGORITHM, MATCH_BITS, PAYLOAD_BITS, detect_file
from swapline.ops.watermark import payload_hex as _hex

logger = logging.getLogger(__name__)


class ProvenanceError(RuntimeError):
    """The output could not be signed, or does not read back as signed and watermarked: nothing is published."""


@dataclass(frozen=True)
class Sealed:
    sha256: str  # of the signed file, as published
    c2pa_state: str
    signer: str | None
    timestamp: str | None
    watermark_payload: str  # hex, 16 digits
    watermark_bits_matched: int
    watermark_frames: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def seal(video: Path, identity: SigningIdentity, *, title: str, parent: Path, assertion: dict[str, Any],
         payload: int) -> Sealed:
    """Sign `video` in place and verify it. Raises SigningError (key, certificate) or
    ProvenanceError (the file does not read back as signed and marked)."""
    payload_hex = _hex(payload)
    sha256 = sign_mp4(video, video, identity, title=title, parent=parent, assertion=assertion,
                      watermark={"alg": ALGORITHM, "payload": payload_hex})
    manifest = read_manifest(video, identity.anchors_pem)
    # With the user's certificate and no anchors given, "Valid" is what can be checked here.
    accepted = {"Trusted"} if identity.anchors_pem else {"Trusted", "Valid"}
    if manifest.state not in accepted:
        raise ProvenanceError(f"{video.name}: the signed file reads back as {manifest.state} "
                              f"({', '.join(manifest.codes) or manifest.error or 'no codes'}); not published")
    found = detect_file(video, expected=[payload])
    if not found.found or (found.bits_matched or 0) < MATCH_BITS:
        raise ProvenanceError(f"{video.name}: the invisible watermark is not found in the written file "
                              f"({found.bits_matched or 0}/{PAYLOAD_BITS} bits over {found.frames} frames); not published")
    logger.info("%s: signed (%s, %s) and watermarked (%d/%d bits)", video.name, manifest.state, manifest.signer,
                found.bits_matched, PAYLOAD_BITS)
    return Sealed(sha256=sha256, c2pa_state=manifest.state, signer=manifest.signer, timestamp=manifest.timestamp,
                  watermark_payload=payload_hex, watermark_bits_matched=int(found.bits_matched or 0),
                  watermark_frames=found.frames)
