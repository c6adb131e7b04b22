import json
import pickle

import numpy as np
import pytest
import torch

from swapline.ops import checkpoint as ckpt
from swapline.ops.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from swapline.ops.model import FaceSwapAE, ModelConfig

CONFIG = {"model": ModelConfig().to_dict()}


def _trained(steps: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    model = FaceSwapAE(ModelConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(steps):
        rgb, mask = model(torch.rand(2, 3, 64, 64), "a")
        optimizer.zero_grad()
        (rgb.mean() + mask.mean()).backward()
        optimizer.step()
    return model, optimizer


def _fresh():
    model = FaceSwapAE(ModelConfig())
    return model, torch.optim.Adam(model.parameters(), lr=0.5)


def test_round_trip_is_bit_exact(tmp_path):
    model, optimizer = _trained()
    generator = torch.Generator().manual_seed(7)
    torch.rand(3, generator=generator)
    np.random.seed(3)
    save_checkpoint(tmp_path, model, optimizer, 12, CONFIG, {"note": "hi"}, generators={"train": generator})
    expected_gen, expected_np, expected_torch = torch.rand(4, generator=generator), np.random.rand(3), torch.rand(3)

    model2, optimizer2 = _fresh()
    generator2 = torch.Generator().manual_seed(99)
    np.random.seed(0)
    state = load_checkpoint(tmp_path, model2, optimizer2)
    restore_rng(state, {"train": generator2})

    assert state["step"] == 12 and state["config"] == CONFIG and state["extra"] == {"note": "hi"}
    for key, value in model.state_dict().items():
        assert torch.equal(value, model2.state_dict()[key]), key
    a, b = optimizer.state_dict(), optimizer2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 1e-3
    assert list(b["param_groups"][0]["betas"]) == [0.5, 0.999]
    assert a["state"].keys() == b["state"].keys()
    for idx, entry in a["state"].items():
        for name, value in entry.items():
            assert torch.equal(value, b["state"][idx][name]) and value.dtype == b["state"][idx][name].dtype
    assert torch.equal(torch.rand(4, generator=generator2), expected_gen)
    assert np.array_equal(np.random.rand(3), expected_np)
    assert torch.equal(torch.rand(3), expected_torch)


def test_files_are_safetensors_and_json_only(tmp_path):
    model, optimizer = _trained(1)
    save_checkpoint(tmp_path, model, optimizer, 1, CONFIG, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["format"] == 1 and set(state["rng"]) >= {"torch", "numpy"}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "optimizer.safetensors"), "pt") as handle:
        assert "state.0.exp_avg" in handle.keys()
        meta = json.loads(handle.metadata()["optimizer"])
    assert meta["scalars"]["0"]["step"]["value"] == 1.0  # step counts as numbers in JSON


def test_truncated_safetensors_names_the_file(tmp_path):
    model, optimizer = _trained(1)
    save_checkpoint(tmp_path, model, optimizer, 1, CONFIG, {})
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path, _fresh()[0])
    # Without the recorded hashes the safetensors parser itself must catch it.
    state = json.loads((tmp_path / "state.json").read_text())
    del state["files"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path, _fresh()[0])


def test_pickle_checkpoints_are_refused(tmp_path, monkeypatch):
    model, _ = _trained(0)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle.load must never be called"))
    pt = tmp_path / "model.pt"
    torch.save(model.state_dict(), pt)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(pt, model)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path, model)  # a folder holding only a .pt
    # A pickle disguised under the safetensors name is not unpickled either.
    save_checkpoint(tmp_path / "ck", model, None, 0, CONFIG, {})
    (tmp_path / "ck" / "model.safetensors").write_bytes(pt.read_bytes())
    state = json.loads((tmp_path / "ck" / "state.json").read_text())
    del state["files"]
    (tmp_path / "ck" / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path / "ck", model)


def test_crash_while_saving_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = _trained(1)
    save_checkpoint(tmp_path, model, optimizer, 1, CONFIG, {})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    real_save = ckpt.save_file

    def crash_on_optimizer(tensors, path, metadata=None):
        if "optimizer" in (metadata or {}):
            raise OSError("disk full")
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", crash_on_optimizer)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, model, optimizer, 2, CONFIG, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    fresh, fresh_opt = _fresh()
    assert load_checkpoint(tmp_path, fresh, fresh_opt)["step"] == 1
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in before.items())


def test_mismatched_files_are_detected(tmp_path):
    model, optimizer = _trained(1)
    save_checkpoint(tmp_path / "one", model, optimizer, 1, CONFIG, {})
    other, _ = _trained(1, seed=1)
    save_checkpoint(tmp_path / "two", other, None, 1, CONFIG, {})
    (tmp_path / "one" / "model.safetensors").write_bytes((tmp_path / "two" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path / "one", _fresh()[0])


def test_wrong_architecture_is_a_checkpoint_error(tmp_path):
    model, _ = _trained(0)
    save_checkpoint(tmp_path, model, None, 0, CONFIG, {})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path, FaceSwapAE(ModelConfig(resolution=128)))
