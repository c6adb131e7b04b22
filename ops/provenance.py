"""How a generated video says it is synthetic: container tags, a JSON sidecar, a visible mark.

None of these can be switched off; only the mark's position is configurable.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

# IPTC digital source type for real footage with a face swapped in by a trained model.
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
MARK_TEXT = "SYNTHETIC"


def container_tags(conversion: str, swap: str) -> dict[str, str]:
    """Container metadata written into the MP4 (survives remuxing by most tools)."""
    return {
        "title": f"swapline conversion {conversion} (synthetic)",
        "comment": f"SYNTHETIC MEDIA: face swapped by swapline model {swap}. IPTC: {DIGITAL_SOURCE_TYPE}",
        "description": "This video contains an AI-generated face swap (EU AI Act Art. 50(2) disclosure).",
    }


def sidecar(**facts: Any) -> dict[str, Any]:
    """The provenance record written next to the video as <name>.provenance.json."""
    return {
        "synthetic": True,
        "digital_source_type": DIGITAL_SOURCE_TYPE,
        "generator": "swapline",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **facts,
    }


def draw_mark(frame: np.ndarray, position: str = "bottom_right") -> np.ndarray:
    """Stamp a small, legible 'SYNTHETIC' label on an RGB frame (in place; also returned)."""
    import cv2

    h, w = frame.shape[:2]
    scale = max(0.35, min(w, h) / 900)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(MARK_TEXT, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(4, th // 2)
    x = pad if position.endswith("left") else w - tw - 2 * pad
    y = pad if position.startswith("top") else h - th - base - 2 * pad
    box = frame[y:y + th + base + 2 * pad, x:x + tw + 2 * pad]
    box[:] = (box * 0.35).astype(np.uint8)  # darken behind the text so it reads on any background
    cv2.putText(frame, MARK_TEXT, (x + pad, y + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return frame
