"""The training loop of the shared-encoder autoencoder, and the inference helpers.

Faces arrive as aligned uint8 crops (N,S,S,3), are resized once to the model resolution and
kept as uint8 on the training device; each step samples a batch per side, augments it
there (augment.py), runs the shared encoder on both sides at once and each side's decoder,
and takes one Adam step on the sum of both sides' losses.

All randomness of a run (batch indices, augmentation) comes from one CPU generator seeded
from TrainConfig.seed and saved in every checkpoint, so a resumed run continues with exactly
the batches an uninterrupted one would have drawn.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from swapline.ops.augment import augment_pair
from swapline.ops.checkpoint import CheckpointError, load_checkpoint, read_state, restore_rng, save_checkpoint
from swapline.ops.model import SIDES, FaceSwapAE, ModelConfig

logger = logging.getLogger(__name__)

# Pixels outside the face mask still count this much: the background stays plausible in
# previews and in the blend margin, while the face gets nearly all of the capacity.
BACKGROUND_WEIGHT = 0.1
CHUNK = 256  # images converted or swapped per batch, to bound memory on big sets
GENERATOR = "train"  # the name of the run's generator in the checkpoint


@dataclass(frozen=True)
class TrainConfig:
    iterations: int
    batch_size: int = 16
    lr: float = 2e-4  # the classic 5e-5 is slow for lite; 2e-4 (DCGAN-style, betas 0.5) trains ~3x faster
    warp_strength: float = 1.0
    loss: str = "l1"  # l1 | mse
    mask_weight: float = 0.5
    seed: int = 0
    preview_every: int = 0  # steps between preview grids in progress(); 0 = none
    log_every: int = 50
    checkpoint_minutes: float = 10.0  # 0 = only at the end

    def __post_init__(self) -> None:
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {self.loss!r}")
        if self.iterations < 0 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError("need iterations >= 0, batch_size >= 1 and log_every >= 1")


@dataclass
class TrainResult:
    step: int
    start_step: int
    losses: list[tuple[int, float, float]]  # (step, loss_a, loss_b), each a mean since the last entry
    final_loss_a: float
    final_loss_b: float
    seconds: float
    checkpoint_dir: Path
    preview: np.ndarray | None = field(default=None, repr=False)  # the last preview grid, if any


# ---------------------------------------------------------------- data

def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N,C,H,W) float -> (N,C,*size); antialiased so downscaled faces do not alias."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def images_to_device(images: np.ndarray, resolution: int, device: torch.device, scale: float = 1.0) -> torch.Tensor:
    """(N,S,S,C) x scale in 0..255 -> uint8 (N,C,R,R) on `device`."""
    n, c = images.shape[0], images.shape[-1]
    out = torch.empty((n, c, resolution, resolution), dtype=torch.uint8, device=device)
    for i in range(0, n, CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(images[i : i + CHUNK])).to(device)  # (n,S,S,C)
        x = chunk.permute(0, 3, 1, 2).float() * scale  # (n,C,S,S)
        out[i : i + CHUNK] = _resize(x, (resolution, resolution)).round().clamp(0, 255).to(torch.uint8)
    return out


def _side_data(faces: np.ndarray, masks: np.ndarray | None, resolution: int, device: torch.device):
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8 or len(faces) == 0:
        raise ValueError(f"faces must be a non-empty uint8 array (N,S,S,3), got {faces.dtype} {faces.shape}")
    if masks is not None and masks.shape != faces.shape[:3]:
        raise ValueError(f"masks must be (N,S,S) matching faces {faces.shape[:3]}, got {masks.shape}")
    rgb = images_to_device(faces, resolution, device)  # (N,3,R,R) uint8
    # Masks may be uint8 0..255, or 0/1 (bool, float, or uint8 that never exceeds 1).
    scale = 1.0 if masks is not None and masks.dtype == np.uint8 and masks.max(initial=0) > 1 else 255.0
    mask = None if masks is None else images_to_device(masks[..., None], resolution, device, scale)  # (N,1,R,R)
    return rgb, mask


def _sample(rgb: torch.Tensor, mask: torch.Tensor | None, batch: int, generator: torch.Generator):
    """A random batch as float in [0,1]: rgb (B,3,R,R), mask (B,1,R,R) (ones when no masks)."""
    idx = torch.randint(len(rgb), (batch,), generator=generator).to(rgb.device)
    x = rgb[idx].float() / 255.0
    m = mask[idx].float() / 255.0 if mask is not None else torch.ones_like(x[:, :1])
    return x, m


# ---------------------------------------------------------------- one step

def _error(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    diff = pred - target
    return diff.abs() if kind == "l1" else diff.square()


def side_loss(rgb, mask, target_rgb, target_mask, config: TrainConfig) -> torch.Tensor:
    """Mask-weighted reconstruction of (B,3,R,R) plus mask_weight x the mask's own error."""
    weight = BACKGROUND_WEIGHT + (1.0 - BACKGROUND_WEIGHT) * target_mask  # (B,1,R,R)
    recon = (_error(rgb, target_rgb, config.loss) * weight).sum() / (weight.sum() * 3.0)
    return recon + config.mask_weight * _error(mask, target_mask, config.loss).mean()


def _device_setup(device: torch.device):
    """(memory format, autocast context factory): bf16 autocast on CUDA, fp32 on CPU (CPU bf16
    is slow without AMX and would make CPU runs differ from the tests). channels_last on both:
    cuDNN's fast conv kernels want it, and oneDNN measured ~20% faster with it on CPU too."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv once
        torch.backends.cuda.matmul.allow_tf32 = True
        return torch.channels_last, lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.channels_last, contextlib.nullcontext


def _train_step(model, optimizer, data, config: TrainConfig, generator, fmt, autocast) -> torch.Tensor:
    """One Adam step on both sides; returns the detached (loss_a, loss_b) as a (2,) tensor."""
    batches = [augment_pair(*_sample(*data[s], config.batch_size, generator), config.warp_strength, generator) for s in SIDES]
    warped = torch.cat([b[0] for b in batches]).contiguous(memory_format=fmt)  # (2B,3,R,R)
    with autocast():
        latents = model.encode(warped).split(config.batch_size)  # 2 x (B,U,8,8)
        outputs = [model.decode(z, s) for z, s in zip(latents, SIDES)]
    # Losses in fp32, outside autocast.
    losses = torch.stack([side_loss(rgb.float(), m.float(), t_rgb, t_m, config)
                          for (rgb, m), (_, t_rgb, t_m) in zip(outputs, batches)])
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    optimizer.step()
    return losses.detach()


# ---------------------------------------------------------------- the loop

def _build(model_config: ModelConfig, config: TrainConfig, device: torch.device, fmt):
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = FaceSwapAE(model_config)
    model = model.to(device, memory_format=fmt)
    # The classic betas (0.5, 0.999); fused Adam on CUDA saves a kernel launch per tensor.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.999),
                                 fused=device.type == "cuda" or None)
    generator = torch.Generator().manual_seed(config.seed)
    return model, optimizer, generator


def train(
    faces_a: np.ndarray,
    faces_b: np.ndarray,
    masks_a: np.ndarray | None,
    masks_b: np.ndarray | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    device: str,
    *,
    resume_from: Path | None = None,
    checkpoint_dir: Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train until step == train_config.iterations (counting a resumed checkpoint's steps);
    save a checkpoint into `checkpoint_dir` every checkpoint_minutes and at the end."""
    started, dev, cfg = time.monotonic(), torch.device(device), train_config
    fmt, autocast = _device_setup(dev)
    data = {"a": _side_data(faces_a, masks_a, model_config.resolution, dev),
            "b": _side_data(faces_b, masks_b, model_config.resolution, dev)}
    model, optimizer, generator = _build(model_config, cfg, dev, fmt)
    step, history = 0, []
    if resume_from is not None:
        state = _resume(Path(resume_from), model, optimizer, generator, model_config, dev)
        step, history = state["step"], [tuple(x) for x in state["extra"].get("losses", [])]
    start_step, losses, preview = step, [], None

    def save() -> None:
        config = {"model": model_config.to_dict(), "train": asdict(cfg)}
        save_checkpoint(checkpoint_dir, model, optimizer, step, config, {"losses": history + losses},
                        generators={GENERATOR: generator})

    logger.info("training %s from step %d to %d on %s", model_config, step, cfg.iterations, dev)
    acc, last = torch.zeros(2, device=dev), {"t": time.monotonic(), "step": step, "save": time.monotonic(), "preview": step}
    while step < cfg.iterations:
        acc += _train_step(model, optimizer, data, cfg, generator, fmt, autocast)
        step += 1
        if step % cfg.log_every == 0 or step == cfg.iterations:
            mean = (acc / (step - last["step"])).tolist()  # the one host sync per log interval
            acc.zero_()
            losses.append((step, mean[0], mean[1]))
            grid = _report(progress, model, faces_a, faces_b, cfg, step, mean, last, dev)
            preview = grid if grid is not None else preview
        if cfg.checkpoint_minutes > 0 and time.monotonic() - last["save"] >= cfg.checkpoint_minutes * 60:
            save()
            last["save"] = time.monotonic()
    save()
    final = (losses or history or [(step, math.nan, math.nan)])[-1]
    return TrainResult(step, start_step, losses, final[1], final[2], time.monotonic() - started, Path(checkpoint_dir), preview)


def _resume(folder: Path, model, optimizer, generator, model_config: ModelConfig, device) -> dict[str, Any]:
    saved = read_state(folder).get("config", {}).get("model")
    if saved != model_config.to_dict():
        raise CheckpointError(f"{folder}: trained as {saved}, cannot resume as {model_config.to_dict()}")
    state = load_checkpoint(folder, model, optimizer, map_location=device)
    restore_rng(state, {GENERATOR: generator})
    return state


def _report(progress, model, faces_a, faces_b, cfg: TrainConfig, step, mean, last, device) -> np.ndarray | None:
    """Log and call progress() for one log interval; returns a preview grid when one is due."""
    now = time.monotonic()
    steps_per_s = (step - last["step"]) / max(now - last["t"], 1e-9)
    last.update(t=now, step=step)
    info = {"step": step, "iterations": cfg.iterations, "loss_a": mean[0], "loss_b": mean[1],
            "images_per_s": steps_per_s * 2 * cfg.batch_size, "eta_s": (cfg.iterations - step) / steps_per_s}
    logger.info("step %d/%d loss_a %.4f loss_b %.4f %.0f img/s", step, cfg.iterations, mean[0], mean[1], info["images_per_s"])
    grid = None
    if cfg.preview_every > 0 and step - last["preview"] >= cfg.preview_every:
        grid = info["preview"] = preview_grid(model, faces_a, faces_b, device=device)
        last["preview"] = step
    if progress is not None:
        progress(info)
    return grid


# ---------------------------------------------------------------- inference

def load_for_inference(checkpoint_dir: Path, device: str = "cpu") -> FaceSwapAE:
    """The network of a checkpoint, in eval mode on `device` (config from its state.json)."""
    state = read_state(Path(checkpoint_dir))
    if "model" not in state.get("config", {}):
        raise CheckpointError(f"{checkpoint_dir}: state.json has no config.model")
    model = FaceSwapAE(ModelConfig.from_dict(state["config"]["model"]))
    load_checkpoint(Path(checkpoint_dir), model, map_location="cpu")
    fmt, _ = _device_setup(torch.device(device))
    return model.to(device, memory_format=fmt).eval()


def swap_batch(model: FaceSwapAE, faces: np.ndarray, to_side: str, device: str | torch.device = "cpu"):
    """uint8 faces (N,H,W,3) of any size -> (rgb uint8 (N,H,W,3), mask float32 (N,H,W)) as
    decoded by decoder `to_side`, resized back to the input size. `model` is on `device`."""
    dev, res = torch.device(device), model.config.resolution
    fmt, autocast = _device_setup(dev)
    n, h, w = faces.shape[:3]
    rgb_out, mask_out = np.empty((n, h, w, 3), np.uint8), np.empty((n, h, w), np.float32)
    for i in range(0, n, CHUNK):
        x = torch.from_numpy(np.ascontiguousarray(faces[i : i + CHUNK])).to(dev).permute(0, 3, 1, 2).float() / 255.0
        x = _resize(x, (res, res)).clamp(0, 1).contiguous(memory_format=fmt)  # (n,3,R,R)
        with torch.inference_mode(), autocast():
            rgb, mask = model(x, to_side)
        out = _resize(torch.cat([rgb, mask], dim=1).float(), (h, w)).clamp(0, 1)  # (n,4,H,W)
        rgb_out[i : i + CHUNK] = (out[:, :3] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        mask_out[i : i + CHUNK] = out[:, 3].cpu().numpy()
    return rgb_out, mask_out


def preview_grid(model: FaceSwapAE, faces_a: np.ndarray, faces_b: np.ndarray, n: int = 4, device: str | torch.device = "cpu") -> np.ndarray:
    """RGB uint8 (6R, nR, 3); rows: A, A->A, A->B, B, B->B, B->A, at the model resolution."""
    res, rows = model.config.resolution, []
    n = min(n, len(faces_a), len(faces_b))  # equal rows even when a faceset is tiny
    was_training = model.training
    model.eval()
    for faces, own, other in ((faces_a, "a", "b"), (faces_b, "b", "a")):
        x = torch.from_numpy(np.ascontiguousarray(faces[:n])).permute(0, 3, 1, 2).float()
        small = _resize(x, (res, res)).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (n,R,R,3)
        rows += [small, swap_batch(model, small, own, device)[0], swap_batch(model, small, other, device)[0]]
    model.train(was_training)
    return np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
