"""FAN 68-point landmarks (Bulat & Tzimiropoulos, 2017) on boxes from our own face detector.

Why not the face-alignment package: it requires `opencv-python`, which installs the same `cv2`
package as our `opencv-python-headless` (whichever is installed last wins, and uninstalling
one breaks the other), plus numba and scikit-image, all for a crop and a heatmap decode. We
need its network and its conventions only: the network is defined below with the same
parameter names, so the state dict face-alignment publishes loads unchanged (a test pins the
layout against face-alignment 1.5.0), and the crop/decode conventions are re-derived here and
tested on synthetic heatmaps.

Nothing here downloads: the weights must already be in a torch-hub style folder
(`<hub>/checkpoints/<file>`), else `FanWeightsMissing` says which file, from where, and how.
torch and OpenCV are imported inside functions (this module is imported with the code location).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

WEIGHTS_URL = "https://www.adrianbulat.com/downloads/python-fan/"
# face-alignment 1.5 (current): FAN-4 as a plain state dict, loadable with weights_only=True.
STATE_DICT_FILE = "2DFAN4-11f355bf06.pth.tar"
# face-alignment 1.4: the same network as TorchScript; accepted when that is what a cache holds.
TORCHSCRIPT_FILE = "2DFAN4-cd938726ad.zip"
WEIGHTS_FILES = (STATE_DICT_FILE, TORCHSCRIPT_FILE)  # preference order

NUM_POINTS = 68
INPUT_SIZE = 256  # FAN's input side; its heatmaps are a quarter of that
HEATMAP_SIZE = 64
# face-alignment's framing of a detector box (it used these with dlib's boxes before it
# switched to S3FD): centre raised by 0.12 box heights, window side 200/195 of width + height.
CENTRE_RAISE = 0.12
REFERENCE_SCALE = 195.0

# The 68-point layout under a left-right mirror: point i of a mirrored face is point
# MIRROR_ORDER[i] of the original (it is its own inverse). Built from the layout's groups.
_MIRROR_PAIRS = (
    (range(0, 17), range(16, -1, -1)),  # jaw
    (range(17, 27), range(26, 16, -1)),  # brows
    (range(27, 31), range(27, 31)),  # nose bridge, on the midline
    (range(31, 36), range(35, 30, -1)),  # nostrils
    ((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46)),  # eyes: outer corner to outer corner
    (range(48, 55), range(54, 47, -1)),  # outer lip, upper
    (range(55, 60), range(59, 54, -1)),  # outer lip, lower
    (range(60, 65), range(64, 59, -1)),  # inner lip, upper
    (range(65, 68), range(67, 64, -1)),  # inner lip, lower
)
MIRROR_ORDER = np.zeros(NUM_POINTS, dtype=np.int64)
for _src, _dst in _MIRROR_PAIRS:
    MIRROR_ORDER[list(_src)] = list(_dst)
    MIRROR_ORDER[list(_dst)] = list(_src)


class FanWeightsMissing(FileNotFoundError):
    """FAN's weights are not in the hub folder; the message says how to get them."""


def hub_dir(weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """The torch-hub style folder to look in: `weights_dir`, or torch's own hub folder
    ($TORCH_HOME/hub, else ~/.cache/torch/hub) so weights fetched by face-alignment are found."""
    if weights_dir:
        return Path(weights_dir).expanduser()
    import torch

    return Path(torch.hub.get_dir())


def find_weights(weights_dir: str | os.PathLike[str] | None = None) -> Path | None:
    folder = hub_dir(weights_dir) / "checkpoints"
    for name in WEIGHTS_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def missing_message(weights_dir: str | os.PathLike[str] | None = None) -> str:
    folder = hub_dir(weights_dir) / "checkpoints"
    target, url = folder / STATE_DICT_FILE, WEIGHTS_URL + STATE_DICT_FILE
    return (
        f"FAN landmark weights not found: expected {target} (face-alignment 1.5's {STATE_DICT_FILE}, {url}; "
        f"1.4's {TORCHSCRIPT_FILE} is accepted too). swapline never downloads them. On a machine with "
        f"internet access run\n  curl -L --create-dirs -o '{target}' {url}\nor\n"
        f"  python -c \"import torch; torch.hub.load_state_dict_from_url('{url}', model_dir='{folder}')\"\n"
        f"then copy the file to {folder} here. Another folder: set the face_analyzer resource's "
        f"fan_weights_dir (or TORCH_HOME). Without FAN use extraction backend 'dlib' (or 'auto')."
    )


def fan_network(stacks: int = 4) -> Any:
    """FAN: a stem, then `stacks` hourglasses, each predicting (B, 68, 64, 64) heatmaps from
    (B, 3, 256, 256) RGB in 0..1; returns only the last stack's (the earlier ones exist for
    intermediate supervision). Parameter names follow face-alignment's so its weights load."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ConvBlock(nn.Module):
        # Three 3x3 convolutions of halving width, concatenated: a multi-scale residual block.
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            half, quarter = cout // 2, cout // 4
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, half, 3, padding=1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(half), nn.Conv2d(half, quarter, 3, padding=1, bias=False)
            self.bn3, self.conv3 = nn.BatchNorm2d(quarter), nn.Conv2d(quarter, quarter, 3, padding=1, bias=False)
            self.downsample = None
            if cin != cout:
                self.downsample = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False))

        def forward(self, x):
            a = self.conv1(F.relu(self.bn1(x)))
            b = self.conv2(F.relu(self.bn2(a)))
            c = self.conv3(F.relu(self.bn3(b)))
            return torch.cat((a, b, c), 1) + (x if self.downsample is None else self.downsample(x))

    class HourGlass(nn.Module):
        def __init__(self, depth: int, features: int) -> None:
            super().__init__()
            self.depth = depth
            for level in range(depth, 0, -1):
                for branch in ("b1", "b2", "b3"):
                    self.add_module(f"{branch}_{level}", ConvBlock(features, features))
            self.add_module("b2_plus_1", ConvBlock(features, features))

        def level(self, n: int, x):
            up = self._modules[f"b1_{n}"](x)
            low = self._modules[f"b2_{n}"](F.avg_pool2d(x, 2, stride=2))
            low = self.level(n - 1, low) if n > 1 else self._modules["b2_plus_1"](low)
            low = self._modules[f"b3_{n}"](low)
            return up + F.interpolate(low, scale_factor=2, mode="nearest")

        def forward(self, x):
            return self.level(self.depth, x)

    class FAN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64)
            self.conv2, self.conv3, self.conv4 = ConvBlock(64, 128), ConvBlock(128, 128), ConvBlock(128, 256)
            for i in range(stacks):
                self.add_module(f"m{i}", HourGlass(4, 256))
                self.add_module(f"top_m_{i}", ConvBlock(256, 256))
                self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
                self.add_module(f"l{i}", nn.Conv2d(256, NUM_POINTS, 1))
                if i < stacks - 1:
                    self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                    self.add_module(f"al{i}", nn.Conv2d(NUM_POINTS, 256, 1))

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
            for i in range(stacks):
                features = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](x))
                features = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](features)))
                heatmaps = self._modules[f"l{i}"](features)
                if i < stacks - 1:  # the next stack sees this one's features and heatmaps
                    x = x + self._modules[f"bl{i}"](features) + self._modules[f"al{i}"](heatmaps)
            return heatmaps

    return FAN()


@lru_cache(maxsize=4)
def load_network(path: str, device: str) -> Any:
    """The network in eval mode on `device`, loaded once per process. No torch.compile (which
    face-alignment 1.5 applies by default): it compiles again per new batch shape, and the
    number of crops varies from frame to frame."""
    import torch

    if path.endswith(".zip"):
        net = torch.jit.load(path, map_location=device)
    else:
        net = fan_network()
        # weights_only: a checkpoint from a cache folder must not be able to run code.
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    logger.info("FAN weights %s loaded on %s", path, device)
    return net.to(device=device, dtype=torch.float32).eval()


def box_window(box: Sequence[float]) -> tuple[np.ndarray, float]:
    """(centre, side) in source px of FAN's square input window for a box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0 - CENTRE_RAISE * (y1 - y0)])
    return centre, 200.0 * ((x1 - x0) + (y1 - y0)) / REFERENCE_SCALE


# Coordinates: boxes and windows are in edge coordinates (pixel k spans [k, k+1)), landmarks
# are returned like dlib's, in pixel-centre coordinates (pixel k is at k): hence the 0.5s.
def window_matrix(centre: np.ndarray, side: float, size: int = INPUT_SIZE) -> np.ndarray:
    """(2, 3) affine taking source pixel-centre coordinates to those of a size x size crop."""
    s = size / side
    ox, oy = centre[0] - side / 2.0, centre[1] - side / 2.0
    return np.array([[s, 0.0, (0.5 - ox) * s - 0.5], [0.0, s, (0.5 - oy) * s - 0.5]])


def crop_window(image: np.ndarray, centre: np.ndarray, side: float) -> np.ndarray:
    """The (256, 256, 3) uint8 network input; outside the frame is black, as FAN was fed."""
    import cv2

    matrix = window_matrix(centre, side)
    return cv2.warpAffine(image, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def heatmap_peaks(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 2) peak (x, y) in heatmap edge coordinates and (N, K) peak values of (N, K, H, W)
    heatmaps: the argmax cell's centre, moved a quarter cell toward the higher neighbour on
    each axis (face-alignment's refinement: it halves the error of the 4-px cells)."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    index = flat.argmax(axis=-1)
    scores = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    ys, xs = np.divmod(index, w)
    inner = (xs > 0) & (xs < w - 1) & (ys > 0) & (ys < h - 1)  # border peaks have no two neighbours
    xc, yc = np.clip(xs, 1, w - 2), np.clip(ys, 1, h - 2)
    ni, ki = np.indices((n, k))
    dx = heatmaps[ni, ki, yc, xc + 1] - heatmaps[ni, ki, yc, xc - 1]
    dy = heatmaps[ni, ki, yc + 1, xc] - heatmaps[ni, ki, yc - 1, xc]
    peaks = np.stack([xs, ys], axis=-1).astype(np.float64) + 0.5
    peaks += 0.25 * np.stack([np.sign(dx), np.sign(dy)], axis=-1) * inner[..., None]
    return peaks, scores


def peaks_to_image(peaks: np.ndarray, centre: np.ndarray, side: float, size: int = HEATMAP_SIZE) -> np.ndarray:
    """Heatmap edge coordinates (..., 2) back to source pixel-centre coordinates."""
    return peaks * (side / size) + (np.asarray(centre) - side / 2.0) - 0.5


class FanLandmarker:
    """FAN landmarks for detector boxes. The weights file is looked for at construction (so
    'auto' can fall back); the network loads on first use."""

    def __init__(self, weights_dir: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 flip_input: bool = False, batch_size: int | None = None) -> None:
        path = find_weights(weights_dir)
        if path is None:
            raise FanWeightsMissing(missing_message(weights_dir))
        if device == "auto":  # resolved here, so torch is imported only when FAN actually runs
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.weights, self.device, self.flip_input = path, device, flip_input
        # On CPU, batches do not pay: 4.8 crops/s at batch 8 vs 7.1 at batch 1 (2 cores,
        # benchmarks/fan_throughput.py); on a GPU they are what keeps it busy.
        self.batch_size = batch_size or (1 if device == "cpu" else 32)

    def landmarks(self, image: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """(N, 68, 2) float32 landmarks in source px for the N boxes of one frame."""
        return self.landmarks_batch([image], [boxes])[0]

    def landmarks_batch(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Sequence[float]]]) -> list[np.ndarray]:
        """Per image, (N_i, 68, 2) landmarks for its boxes; the crops of all images go through
        the network together, `batch_size` at a time (what keeps a GPU busy)."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box lists")
        if not images:
            return []
        crops, windows, counts = [], [], []
        for image, image_boxes in zip(images, boxes):
            counts.append(len(image_boxes))
            for box in image_boxes:
                centre, side = box_window(box)
                crops.append(crop_window(image, centre, side))
                windows.append((centre, side))
        points = np.zeros((len(crops), NUM_POINTS, 2), dtype=np.float32)
        if crops:
            peaks, _ = heatmap_peaks(self.heatmaps(np.stack(crops)))
            for i, (centre, side) in enumerate(windows):
                points[i] = peaks_to_image(peaks[i], centre, side)
        return np.split(points, np.cumsum(counts)[:-1])

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """(N, 68, 64, 64) float32 heatmaps of (N, 256, 256, 3) uint8 RGB crops."""
        import torch

        net = load_network(str(self.weights), self.device)
        order = torch.as_tensor(MIRROR_ORDER, device=self.device)
        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                # uint8 crosses to the device (a quarter of float32's bytes), then converts.
                x = torch.from_numpy(np.ascontiguousarray(crops[start:start + self.batch_size])).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                maps = _last(net(x))
                if self.flip_input:
                    # The mirrored face's point i is point MIRROR_ORDER[i]: reorder, unflip, average.
                    maps = (maps + _last(net(x.flip(3)))[:, order].flip(3)) / 2.0
                out.append(maps.float().cpu().numpy())
        return np.concatenate(out)


def _last(output: Any) -> Any:
    # face-alignment's own FAN returns every stack's heatmaps; the final one is the answer.
    return output[-1] if isinstance(output, (list, tuple)) else output
