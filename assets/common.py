"""Helpers shared by the stage modules: keys, versions, metadata."""


import base64
import time
from typing import Any

import dagster as dg

from swapline.ops.storage import hash_json

# Bump a stage's algorithm version when its output would change for the same input.
ALGORITHM = {
    "source_media": "1",
    "target_video": "1",
    "frames": "1",
    "aligned_faces": "1",
    "faceset": "1",
    "face_model": "1",
    "converted_video": "1",
}


def code_version(stage: str, settings: Any = None) -> str:
    """Algorithm version plus a hash of the settings that shape the output: a changed setting
    makes exactly the assets that use it stale."""
    return f"{ALGORITHM[stage]}-{hash_json(settings)[:10]}"


def sources_partitions(identity: str) -> dg.DynamicPartitionsDefinition:
    """One dynamic partition per source of `identity`, kept in sync with the project file."""
    return dg.DynamicPartitionsDefinition(name=f"{identity}_sources")


def image_md(png_or_jpeg: bytes, alt: str, mime: str = "image/png") -> dg.MetadataValue:
    """A small preview image shown inline in the Dagster UI."""
    data = base64.b64encode(png_or_jpeg).decode()
    return dg.MetadataValue.md(f"![{alt}](data:{mime};base64,{data})")


class Eta:
    """Counts and ETA for progress lines in the Dagster log."""

    def __init__(self, total: int, log, label: str, every_s: float = 5.0):
        self.total, self.log, self.label, self.every_s = total, log, label, every_s
        self.start = self.last = time.monotonic()

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        self.log.info(f"{self.label}: {done}/{self.total} ({rate:.1f}/s, ETA {eta:.0f}s)")
