"""The torch device the model trains and converts on (the "GPU resource")."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class TorchDevice(dg.ConfigurableResource):
    """Picks the torch device; torch is imported only when a device is asked for."""

    device: str = Field(default="auto", description='"auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".')

    def resolve(self) -> str:
        import torch  # lazy: keeps the code location fast to load

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"TorchDevice asks for {self.device!r} but torch sees no CUDA device; use 'auto' or 'cpu'.")
        return self.device
