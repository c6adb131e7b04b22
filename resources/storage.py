"""Where swapline keeps its artifacts (media, faces, checkpoints, videos)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from swapline.ops.storage import ArtifactStore


class StorageResource(dg.ConfigurableResource):
    """Root folder of swapline's atomic, content-addressed artifact store."""

    root: str = Field(description="Folder for all artifacts; set it with the SWAPLINE_HOME environment variable.")

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)
