"""Training checkpoints as safetensors + JSON; never pickle.

A checkpoint is a folder of three files:

    model.safetensors      the weights (state_dict keys)
    optimizer.safetensors  optimizer state tensors as `state.<param index>.<name>`; the rest
                           (param_groups, scalar step counts) as JSON in its metadata
    state.json             {"format", "step", "config", "extra", "rng", "files"}

`files` holds the sha256 of both safetensors files, so a load never mixes the files of two
saves. Each file is written to a temp file beside it and fsynced first; only then are the
three renamed into place, state.json last. A crash while writing (the slow part) leaves the
previous checkpoint intact; a crash between the renames (microseconds) is detected at load
time as a hash mismatch. For a checkpoint that must survive any crash, pass a fresh folder
(the asset layer does: it builds into a temp folder and publishes it whole).

Loading restores weights and optimizer state; RNG state is returned in the state dict and
restored only by an explicit `restore_rng(state, ...)`, so loading a model for inference
does not reset the process's random streams.
"""

from __future__ import annotations

import base64
import json
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from swapline.ops.storage import atomic_file, sha256_file

logger = logging.getLogger(__name__)

FORMAT = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin"}
# How an optimizer runs on its device, not what it learned: a load keeps the live optimizer's
# values, so a run saved on a GPU (fused Adam) resumes on a CPU and vice versa.
DEVICE_KEYS = ("foreach", "fused", "capturable", "differentiable")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, mismatched or in a refused format (pickle)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


# ---------------------------------------------------------------- RNG state

def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The process's torch CPU, CUDA and numpy RNG states plus named generators, as JSON."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
        "numpy": {"kind": kind, "keys": _b64(keys.astype("<u4").tobytes()), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "generators": {name: _b64(g.get_state().numpy().tobytes()) for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return state


def _byte_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(_unb64(text)), dtype=torch.uint8)


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Put back the RNG states saved in a checkpoint's state (as returned by load_checkpoint)."""
    rng = state["rng"]
    torch.set_rng_state(_byte_tensor(rng["torch"]))
    np_state = rng["numpy"]
    keys = np.frombuffer(_unb64(np_state["keys"]), dtype="<u4").astype(np.uint32)
    np.random.set_state((np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_byte_tensor(s) for s in rng["cuda"]])
    for name, generator in (generators or {}).items():
        if name not in rng["generators"]:
            raise CheckpointError(f"checkpoint has no state for generator {name!r}")
        generator.set_state(_byte_tensor(rng["generators"][name]))


# ---------------------------------------------------------------- optimizer (de)flattening

def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> (tensors named state.<idx>.<name>, JSON for everything else).
    0-dim tensors (Adam's step count) go to JSON as numbers with their dtype."""
    full = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in full["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            elif isinstance(value, torch.Tensor):
                scalars.setdefault(str(idx), {})[name] = {"value": value.item(), "dtype": str(value.dtype).removeprefix("torch.")}
            else:
                scalars.setdefault(str(idx), {})[name] = {"value": value}
    groups = [{k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in g.items()} for g in full["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any], live: torch.optim.Optimizer) -> dict[str, Any]:
    params = [p for group in live.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, idx, name = key.split(".", 2)
        param = params[int(idx)] if int(idx) < len(params) else None
        if param is not None and param.shape == tensor.shape:
            # Take the parameter's strides (channels_last): fused Adam refuses mixed layouts.
            tensor = torch.empty_like(param, dtype=tensor.dtype, device=tensor.device).copy_(tensor)
        state.setdefault(int(idx), {})[name] = tensor
    for idx, entries in meta["scalars"].items():
        for name, item in entries.items():
            value = item["value"]
            if "dtype" in item:
                value = torch.tensor(value, dtype=getattr(torch, item["dtype"]))
            state.setdefault(int(idx), {})[name] = value
    groups = meta["param_groups"]
    for saved, current in zip(groups, live.param_groups):
        saved.update({k: current[k] for k in DEVICE_KEYS if k in current})
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------- save / load

def save_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    *,
    generators: dict[str, torch.Generator] | None = None,
) -> Path:
    """Write a checkpoint into `folder` (created if needed) and return it. `config` should hold
    {"model": ModelConfig.to_dict(), ...}: load_for_inference rebuilds the network from it."""
    folder = Path(folder)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with ExitStack() as stack:
        # Entered state first so it is renamed last (ExitStack unwinds in reverse).
        state_tmp = stack.enter_context(atomic_file(folder / STATE_FILE))
        model_tmp = stack.enter_context(atomic_file(folder / MODEL_FILE))
        save_file(weights, str(model_tmp), metadata={"format": str(FORMAT)})
        files = {MODEL_FILE: sha256_file(model_tmp)}
        if optimizer is not None:
            opt_tmp = stack.enter_context(atomic_file(folder / OPTIMIZER_FILE))
            opt_tensors, opt_meta = _flatten_optimizer(optimizer)
            save_file(opt_tensors, str(opt_tmp), metadata={"format": str(FORMAT), "optimizer": json.dumps(opt_meta)})
            files[OPTIMIZER_FILE] = sha256_file(opt_tmp)
        state = {"format": FORMAT, "step": int(step), "config": config, "extra": extra or {},
                 "rng": rng_state(generators), "files": files}
        state_tmp.write_text(json.dumps(state, indent=2, sort_keys=True, default=str))
    logger.info("saved checkpoint at step %d to %s", step, folder)
    return folder


def _check_folder(folder: Path) -> None:
    # Unpickling runs arbitrary code: a torch.save file is refused before it is opened.
    if folder.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{folder}: refusing to load a pickle/torch.save checkpoint; checkpoints are folders "
            f"of {MODEL_FILE}, {OPTIMIZER_FILE} and {STATE_FILE}"
        )
    if folder.is_file():
        raise CheckpointError(f"{folder}: a checkpoint is a folder, not a single file")
    if not (folder / STATE_FILE).is_file():
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES) if folder.is_dir() else []
        hint = f" (found {pickles}: pickle checkpoints are refused)" if pickles else ""
        raise CheckpointError(f"{folder}: no {STATE_FILE}, not a checkpoint{hint}")


def read_state(folder: Path) -> dict[str, Any]:
    """state.json of a checkpoint folder, validated."""
    folder = Path(folder)
    _check_folder(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / STATE_FILE}: unreadable: {exc}") from exc
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{folder / STATE_FILE}: unknown format {state.get('format')!r}")
    return state


def _read_safetensors(path: Path, expected_sha: str | None, device: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    if expected_sha is not None and sha256_file(path) != expected_sha:
        raise CheckpointError(f"{path}: corrupt or truncated (sha256 differs from {STATE_FILE})")
    try:
        with safe_open(str(path), framework="pt", device=device) as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers/sizes
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc


def load_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load weights (and optimizer state when given) from a checkpoint folder; return its
    state.json contents. Call restore_rng(state, ...) to also continue its random streams."""
    folder = Path(folder)
    state = read_state(folder)
    files = state.get("files", {})
    weights, _ = _read_safetensors(folder / MODEL_FILE, files.get(MODEL_FILE), str(map_location))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder / MODEL_FILE}: does not fit this model: {exc}") from exc
    if optimizer is not None:
        tensors, meta = _read_safetensors(folder / OPTIMIZER_FILE, files.get(OPTIMIZER_FILE), str(map_location))
        if "optimizer" not in meta:
            raise CheckpointError(f"{folder / OPTIMIZER_FILE}: no optimizer metadata")
        try:
            optimizer.load_state_dict(_unflatten_optimizer(tensors, json.loads(meta["optimizer"]), optimizer))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{folder / OPTIMIZER_FILE}: does not fit this optimizer: {exc}") from exc
    return state


def verify_checkpoint(folder: Path) -> dict[str, Any]:
    """state.json of a checkpoint whose files are all present and match their hashes; a
    CheckpointError names the first file that does not. Reads the files, loads nothing."""
    folder = Path(folder)
    state = read_state(folder)
    for name, expected in state.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        if sha256_file(path) != expected:
            raise CheckpointError(f"{path}: corrupt or truncated (sha256 differs from {STATE_FILE})")
    return state


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint folder (CPU tensors), hash-checked."""
    folder = Path(folder)
    state = read_state(folder)
    return _read_safetensors(folder / MODEL_FILE, state.get("files", {}).get(MODEL_FILE), "cpu")[0]
