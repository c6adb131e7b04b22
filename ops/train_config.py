"""What one training call is asked to do, without torch: the project file takes its swaps'
defaults from here (one definition per setting), and loading it must not load torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """One training call. The defaults are the ones a project file's swap gets: swapline/project.py's
    `Swap` takes them from here (one definition per setting)."""

    iterations: int
    batch_size: int = 16
    lr: float = 2e-4  # the classic 5e-5 is slow for lite; 2e-4 (DCGAN-style, betas 0.5) trains ~3x faster
    warp_strength: float = 1.0
    loss: str = "l1"  # l1 | mse
    mask_weight: float = 0.5
    ssim_weight: float = 0.5  # x (1 - SSIM); 0 turns SSIM off
    seed: int = 0
    preview_every: int = 0  # steps between preview grids in progress(); 0 = none
    log_every: int = 50
    checkpoint_minutes: float = 10.0  # 0 = no timed checkpoints
    checkpoint_every_steps: int = 0  # 0 = no step-count checkpoints; both may be on
    max_seconds: float | None = None  # wall-clock budget of this call; None = no limit
    target_loss: float | None = None  # stop once both sides' logged mean loss is at or below it
    compile: bool = True  # torch.compile the networks; applied on CUDA only (CPU compile costs more than it saves)
    # Data-parallel training (ops/distributed.py): processes, one per GPU. batch_size stays the
    # global batch per side and each process trains on batch_size / gpus of it, so a step means
    # the same on any world size and this is a speed-only setting; 1 is the plain one-process loop.
    gpus: int = 1
    ddp_backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo

    def __post_init__(self) -> None:
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {self.loss!r}")
        if self.iterations < 0 or self.batch_size < 1 or self.log_every < 1 or self.checkpoint_every_steps < 0:
            raise ValueError("need iterations >= 0, batch_size >= 1, log_every >= 1 and checkpoint_every_steps >= 0")
        if min(self.ssim_weight, self.mask_weight) < 0 or (self.max_seconds is not None and self.max_seconds <= 0):
            raise ValueError("loss weights must be >= 0 and max_seconds > 0 (or None)")
        if self.gpus < 1 or self.batch_size % self.gpus or self.ddp_backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"need gpus >= 1 dividing batch_size (each process takes an equal share of the global batch), "
                             f"ddp_backend auto|nccl|gloo; got gpus={self.gpus}, batch_size={self.batch_size}, {self.ddp_backend!r}")
