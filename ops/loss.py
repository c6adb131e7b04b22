"""The training loss of one side: masked reconstruction + SSIM + the mask's own error.

SSIM comes from pytorch-msssim (a reviewed implementation, gaussian window as in the paper)
rather than hand-written code; it rewards local structure (edges, texture) that a per-pixel
L1/MSE averages away, which is what makes faces look sharp rather than blurred.
"""

from __future__ import annotations

import torch
from pytorch_msssim import ssim

# Pixels outside the face mask still count this much: the background stays plausible in
# previews and in the blend margin, while the face gets nearly all of the capacity.
BACKGROUND_WEIGHT = 0.1
SSIM_WINDOW = 11  # the paper's gaussian window; fits 64 px models (the smallest) with room to spare


def _error(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    diff = pred - target
    return diff.abs() if kind == "l1" else diff.square()


def side_loss(rgb, mask, target_rgb, target_mask, kind: str, mask_weight: float, ssim_weight: float) -> torch.Tensor:
    """rgb, target_rgb (B,3,R,R) and mask, target_mask (B,1,R,R) in [0,1] -> scalar loss:
    mask-weighted reconstruction + ssim_weight x (1 - SSIM of the weighted images)
    + mask_weight x the mask's own error."""
    weight = BACKGROUND_WEIGHT + (1.0 - BACKGROUND_WEIGHT) * target_mask  # (B,1,R,R)
    recon = (_error(rgb, target_rgb, kind) * weight).sum() / (weight.sum() * 3.0)
    loss = recon + mask_weight * _error(mask, target_mask, kind).mean()
    if ssim_weight > 0:
        # Both images weighted alike: SSIM then judges the face, and the background only faintly.
        similarity = ssim(rgb * weight, target_rgb * weight, data_range=1.0, win_size=SSIM_WINDOW)
        loss = loss + ssim_weight * (1.0 - similarity)
    return loss
