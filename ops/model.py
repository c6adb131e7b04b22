"""The classic deepfakes autoencoder: one shared encoder, one decoder per identity.

Training teaches decoder "a" to rebuild faces of A and decoder "b" faces of B from the
same latent space; a swap encodes a face of A and decodes it with decoder "b".

    x (B,3,R,R) -> strided 5x5 convs -> (B,C,4,4) -> dense -> dense -> (B,C',4,4)
      -> pixel-shuffle upscale -> z (B,U,8,8)                       [shared encoder]
    z -> pixel-shuffle upscales -> (B,c,R,R) -> 5x5 conv -> rgb (B,3,R,R), mask (B,1,R,R)
                                                                    [decoder per side]

The widths of each preset are given for 64 px. A larger resolution adds one stride-2 conv
in front of the encoder and one upscale at the end of each decoder per doubling, so the
dense bottleneck always sees a 4x4 map and its size does not grow with the resolution.
No I/O here: see checkpoint.py for saving and train.py for the loop.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from swapline.ops.model_config import (  # noqa: F401 (re-exported: the networks' configuration)
    BASE_RESOLUTION,
    MIN_CHANNELS,
    PRESETS,
    RESOLUTIONS,
    SIDES,
    ModelConfig,
    Widths,
)

logger = logging.getLogger(__name__)
LEAK = 0.1


def _icnr_(conv: nn.Conv2d, scale: int = 2) -> None:
    """Give the 4 sub-pixels of each pixel-shuffle output the same initial kernel, so a fresh
    network upsamples like nearest-neighbour instead of printing a checkerboard."""
    group = scale * scale
    with torch.no_grad():
        conv.weight.copy_(conv.weight[::group].repeat_interleave(group, dim=0))
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[::group].repeat_interleave(group, dim=0))


class Downscale(nn.Sequential):
    """(B,cin,H,W) -> (B,cout,H/2,W/2)"""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 5, stride=2, padding=2), nn.LeakyReLU(LEAK))


class Upscale(nn.Sequential):
    """(B,cin,H,W) -> (B,cout,2H,2W): 3x3 conv to 4*cout channels, then pixel shuffle."""

    def __init__(self, cin: int, cout: int):
        conv = nn.Conv2d(cin, cout * 4, 3, padding=1)
        _icnr_(conv)
        super().__init__(conv, nn.LeakyReLU(LEAK), nn.PixelShuffle(2))


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        widths = PRESETS[config.preset]
        channels = (3,) + config.encoder_channels()
        self.convs = nn.Sequential(*(Downscale(i, o) for i, o in zip(channels[:-1], channels[1:])))
        # The classic bottleneck: two dense layers with no activation in between.
        self.dense_in = nn.Linear(4 * 4 * channels[-1], widths.dense)
        self.dense_out = nn.Linear(widths.dense, 4 * 4 * widths.bottleneck)
        self.bottleneck = widths.bottleneck
        self.upscale = Upscale(widths.bottleneck, widths.upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x)  # (B, C, 4, 4)
        h = self.dense_out(self.dense_in(h.flatten(1)))  # (B, 16*C')
        h = h.view(-1, self.bottleneck, 4, 4)  # (B, C', 4, 4)
        return self.upscale(h)  # (B, U, 8, 8)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        channels = (PRESETS[config.preset].upscale,) + config.decoder_channels()
        self.upscales = nn.Sequential(*(Upscale(i, o) for i, o in zip(channels[:-1], channels[1:])))
        # One 5x5 conv for rgb and mask together: 3 + 1 output channels.
        self.head = nn.Conv2d(channels[-1], 4, 5, padding=2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.head(self.upscales(z))  # (B, 4, R, R)
        out = torch.sigmoid(h)
        return out[:, :3], out[:, 3:]  # rgb (B,3,R,R), mask (B,1,R,R)


class FaceSwapAE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoders = nn.ModuleDict({side: Decoder(config) for side in SIDES})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,3,R,R) in [0,1] -> z (B,U,8,8)"""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B,U,8,8) -> rgb (B,3,R,R), mask (B,1,R,R), both sigmoid in [0,1]"""
        if side not in self.decoders:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        return self.decoders[side](z)

    def forward(self, x: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,3,R,R) float in [0,1] -> rgb (B,3,R,R), mask (B,1,R,R) as seen by decoder `side`."""
        return self.decode(self.encode(x), side)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
