"""Batched training augmentation, run as tensor ops on the training device.

The random parameters (a few numbers per image) are drawn from `generator` on its own
device and then moved to the batch's device, so a CPU generator gives the same augmentation
on CPU and GPU and its state is cheap to checkpoint. Images are float (B,C,H,W) in [0,1];
any channel count works, so a mask can ride along as an extra channel and get exactly
the same geometric transform as its face.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# The classic warp moves its 5x5 control points by about 2 px at 64 px (5 px of noise on a
# 160 px crop resampled to 64): R/32 pixels, i.e. 1/16 in grid_sample's [-1, 1] units.
WARP_SIGMA = 1.0 / 16.0
WARP_POINTS = 5


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) drawn on the generator's device, returned on `device`."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source).to(device)


def _symmetric(shape: tuple[int, ...], limit: float, generator, device) -> torch.Tensor:
    """Uniform in [-limit, limit)."""
    return (_rand(shape, generator, device) * 2.0 - 1.0) * limit


def _identity_grid(batch: torch.Tensor) -> torch.Tensor:
    """The sampling grid that reproduces `batch` exactly: (B, H, W, 2) in [-1, 1]."""
    theta = torch.eye(2, 3, device=batch.device, dtype=batch.dtype).expand(batch.shape[0], 2, 3)
    return F.affine_grid(theta, list(batch.shape), align_corners=False)


def _sample(batch: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    # Border padding repeats edge pixels (the classic used BORDER_REPLICATE) instead of
    # pulling black into the frame, which the decoder would then learn to draw.
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_affine_flip(
    batch: torch.Tensor,
    rotation: float = 10.0,
    scale: float = 0.05,
    shift: float = 0.05,
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate by +-`rotation` degrees, zoom by 1+-`scale`, shift by +-`shift` of the image
    size, and mirror left-right with probability `flip_p`, each image its own draw.

    batch (B,C,H,W) -> (B,C,H,W). Put the mask in as an extra channel to move it with its face.
    """
    b, device = batch.shape[0], batch.device
    angle = _symmetric((b,), math.radians(rotation), generator, device)
    zoom = 1.0 + _symmetric((b,), scale, generator, device)
    offset = _symmetric((b, 2), 2.0 * shift, generator, device)  # grid units span 2 per image
    mirror = torch.where(_rand((b,), generator, device) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # theta maps output coordinates to input ones; the mirror negates the input x axis.
    theta = torch.stack(
        [
            torch.stack([cos * mirror, -sin * mirror, offset[:, 0]], dim=1),
            torch.stack([sin, cos, offset[:, 1]], dim=1),
        ],
        dim=1,
    ).to(batch.dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return _sample(batch, grid)


def random_warp(
    batch: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The classic deepfakes warp: jitter a 5x5 grid of control points, interpolate it into a
    smooth dense flow and resample. The network must undo the warp, so it learns faces, not
    pixels.

    batch (B,C,H,W) -> (warped (B,C,H,W), target (B,C,H,W)). The target is the unwarped input
    itself (any affine was applied before, to both); strength 0 gives warped == target.
    """
    b, _, h, w = batch.shape
    noise = _randn((b, 2, WARP_POINTS, WARP_POINTS), generator, batch.device) * (WARP_SIGMA * strength)
    flow = F.interpolate(noise.to(batch.dtype), size=(h, w), mode="bicubic", align_corners=True)  # (B,2,H,W)
    grid = _identity_grid(batch) + flow.permute(0, 2, 3, 1)  # (B, H, W, 2)
    return _sample(batch, grid), batch


def color_jitter(
    batch: torch.Tensor,
    brightness: float = 0.1,
    contrast: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Shift brightness by +-`brightness` and scale contrast by 1+-`contrast` about each
    image's mean. (B,3,H,W) -> (B,3,H,W) in [0,1].

    The training loop applies it before the warp, to input and target alike: the faces then
    cover more lighting, while the network still reproduces the colours it is given (jitter
    on the input alone would teach it to restore the dataset's average colours).
    """
    b, device = batch.shape[0], batch.device
    shift = _symmetric((b, 1, 1, 1), brightness, generator, device).to(batch.dtype)
    gain = 1.0 + _symmetric((b, 1, 1, 1), contrast, generator, device).to(batch.dtype)
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    return ((batch - mean) * gain + mean + shift).clamp(0.0, 1.0)


def augment_pair(
    rgb: torch.Tensor,
    mask: torch.Tensor,
    warp_strength: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole training augmentation of one side.

    rgb (B,3,R,R), mask (B,1,R,R) -> (warped input (B,3,R,R), target rgb (B,3,R,R), target mask (B,1,R,R))
    """
    both = random_affine_flip(torch.cat([rgb, mask], dim=1), generator=generator)  # (B,4,R,R)
    target_rgb = color_jitter(both[:, :3], generator=generator)
    warped, _ = random_warp(target_rgb, warp_strength, generator=generator)
    return warped, target_rgb, both[:, 3:]
