import numpy as np
import pytest
import torch

from swapline.ops.augment import (
    augment_pair,
    color_jitter,
    random_affine_flip,
    random_warp,
)
from swapline.ops.checkpoint import CheckpointError, read_state
from swapline.ops.model import FaceSwapAE, ModelConfig
from swapline.ops.train import (
    TrainConfig,
    load_for_inference,
    preview_grid,
    swap_batch,
    train,
)
from tests.conftest import structured_faces


def _faces(n: int, size: int, seed: int) -> np.ndarray:
    return structured_faces(n, size, seed)


def _hull_masks(n: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.repeat((((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.12)[None].astype(np.uint8) * 255, n, axis=0)


FACES_A, FACES_B = _faces(4, 64, 0), _faces(4, 64, 1)


# ---------------------------------------------------------------- augmentation

def test_random_warp_changes_pixels_and_is_identity_at_zero():
    batch = torch.from_numpy(FACES_A).permute(0, 3, 1, 2).float() / 255
    g = torch.Generator().manual_seed(0)
    warped, target = random_warp(batch, 1.0, generator=g)
    assert warped.shape == batch.shape and torch.equal(target, batch)
    assert (warped - batch).abs().mean() > 1e-3
    still, _ = random_warp(batch, 0.0, generator=g)
    assert torch.allclose(still, batch, atol=1e-5)


def test_augmentation_is_reproducible_from_the_generator():
    batch = torch.rand(2, 3, 32, 32)
    one = random_warp(batch, 1.0, torch.Generator().manual_seed(5))[0]
    two = random_warp(batch, 1.0, torch.Generator().manual_seed(5))[0]
    assert torch.equal(one, two)


def test_affine_flip_moves_mask_with_face():
    batch = torch.rand(3, 3, 32, 32)
    mirrored = random_affine_flip(batch, rotation=0, scale=0, shift=0, flip_p=1.0)
    assert torch.allclose(mirrored, batch.flip(-1), atol=1e-5)
    with_mask = torch.cat([batch, batch[:, :1]], dim=1)  # mask channel == red channel
    moved = random_affine_flip(with_mask, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(moved, with_mask, atol=1e-3)
    assert torch.equal(moved[:, 0], moved[:, 3])


def test_color_jitter_and_augment_pair_shapes():
    batch = torch.rand(2, 3, 32, 32)
    jittered = color_jitter(batch, generator=torch.Generator().manual_seed(0))
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.equal(jittered, batch)
    warped, target, mask = augment_pair(batch, torch.ones(2, 1, 32, 32), 1.0, torch.Generator().manual_seed(0))
    assert warped.shape == target.shape == (2, 3, 32, 32) and mask.shape == (2, 1, 32, 32)


# ---------------------------------------------------------------- training

def _run(tmp_path, name, iterations, resume_from=None, **overrides):
    config = TrainConfig(iterations=iterations, batch_size=4, lr=5e-4, log_every=1, **overrides)
    return train(FACES_A, FACES_B, _hull_masks(4, 64), None, ModelConfig(), config, "cpu",
                 resume_from=resume_from, checkpoint_dir=tmp_path / name)


def test_a_few_dozen_steps_lower_the_loss(tmp_path):
    events = []
    config = TrainConfig(iterations=40, batch_size=4, lr=5e-4, log_every=10, warp_strength=0.5)
    result = train(_faces(4, 96, 0), _faces(4, 96, 1), _hull_masks(4, 96), None, ModelConfig(), config,
                   "cpu", checkpoint_dir=tmp_path / "ck", progress=events.append)
    assert [s for s, _, _ in result.losses] == [10, 20, 30, 40]
    first, last = result.losses[0], result.losses[-1]
    assert last[1] < 0.8 * first[1] and last[2] < 0.8 * first[2], result.losses
    assert (result.step, result.start_step, result.final_loss_a) == (40, 0, last[1])
    assert set(events[0]) == {"step", "iterations", "loss_a", "loss_b", "images_per_s", "eta_s"}
    assert events[-1]["eta_s"] == 0 and events[0]["images_per_s"] > 0
    assert read_state(tmp_path / "ck")["step"] == 40


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    straight = _run(tmp_path, "straight", 6)
    first_half = _run(tmp_path, "half", 3)
    resumed = _run(tmp_path, "resumed", 6, resume_from=tmp_path / "half")
    assert first_half.losses == straight.losses[:3]
    assert resumed.start_step == 3 and resumed.losses == straight.losses[3:]
    a = load_for_inference(tmp_path / "straight").state_dict()
    b = load_for_inference(tmp_path / "resumed").state_dict()
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    # History carries over into the resumed checkpoint.
    assert len(read_state(tmp_path / "resumed")["extra"]["losses"]) == 6


def test_resume_at_the_target_does_no_steps(tmp_path):
    _run(tmp_path, "done", 2)
    again = _run(tmp_path, "again", 2, resume_from=tmp_path / "done")
    assert (again.step, again.start_step, again.losses) == (2, 2, [])
    assert np.isfinite(again.final_loss_a)
    assert read_state(tmp_path / "again")["step"] == 2


def test_resume_with_another_model_config_is_refused(tmp_path):
    _run(tmp_path, "lite", 1)
    config = TrainConfig(iterations=2, batch_size=2)
    with pytest.raises(CheckpointError, match="resume"):
        train(FACES_A, FACES_B, None, None, ModelConfig(resolution=128), config, "cpu",
              resume_from=tmp_path / "lite", checkpoint_dir=tmp_path / "x")


def test_bad_inputs_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        TrainConfig(iterations=1, loss="huber")
    with pytest.raises(ValueError, match="uint8"):
        train(FACES_A.astype(np.float32), FACES_B, None, None, ModelConfig(), TrainConfig(iterations=1), "cpu",
              checkpoint_dir=tmp_path)


# ---------------------------------------------------------------- inference

def test_swap_batch_and_preview(tmp_path):
    _run(tmp_path, "ck", 1, preview_every=1)
    model = load_for_inference(tmp_path / "ck")
    assert not model.training
    faces = _faces(3, 48, 2)
    rgb, mask = swap_batch(model, faces, "b", "cpu")
    assert rgb.shape == (3, 48, 48, 3) and rgb.dtype == np.uint8
    assert mask.shape == (3, 48, 48) and mask.dtype == np.float32
    assert 0 <= mask.min() and mask.max() <= 1 and rgb.std() > 0
    # The helper is the model's own forward pass, resized.
    with torch.no_grad():
        direct = model(torch.from_numpy(FACES_A).permute(0, 3, 1, 2).float() / 255, "a")[0]
    again, _ = swap_batch(model, FACES_A, "a", "cpu")
    expected = (direct * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(again.astype(int) - expected.astype(int)).max() <= 1
    grid = preview_grid(model, FACES_A, FACES_B, n=2, device="cpu")
    assert grid.shape == (6 * 64, 2 * 64, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[:64, :64], FACES_A[0])  # first row: the originals


def test_progress_carries_previews(tmp_path):
    events = []
    config = TrainConfig(iterations=2, batch_size=2, log_every=1, preview_every=2)
    result = train(FACES_A, FACES_B, None, None, ModelConfig(), config, "cpu",
                   checkpoint_dir=tmp_path, progress=events.append)
    assert "preview" not in events[0] and events[1]["preview"].shape == (6 * 64, 4 * 64, 3)
    assert result.preview is events[1]["preview"]


def test_training_does_not_touch_the_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(FACES_A, FACES_B, None, None, ModelConfig(), TrainConfig(iterations=1, batch_size=2), "cpu",
          checkpoint_dir=tmp_path)
    assert torch.equal(torch.rand(3), expected)
    assert isinstance(load_for_inference(tmp_path), FaceSwapAE)


def test_training_rows_of_a_memory_map_train_like_a_copy_of_them(tmp_path):
    """index_a/index_b pick the rows to train on from (memory-mapped) arrays without copying
    them: the run is step for step the run on a copy of those rows."""
    faces, masks = _faces(6, 64, 2), _hull_masks(6, 64)
    for name, array in (("faces", faces), ("masks", masks)):
        np.save(tmp_path / f"{name}.npy", array)
    mapped = {name: np.load(tmp_path / f"{name}.npy", mmap_mode="r") for name in ("faces", "masks")}
    rows = np.array([0, 2, 3, 5])
    config = TrainConfig(iterations=3, batch_size=2, log_every=1, checkpoint_minutes=0)
    copied = train(faces[rows], FACES_B, masks[rows], None, ModelConfig(), config, "cpu", checkpoint_dir=tmp_path / "copy")
    indexed = train(mapped["faces"], FACES_B, mapped["masks"], None, ModelConfig(), config, "cpu",
                    checkpoint_dir=tmp_path / "index", index_a=rows)
    assert indexed.losses == copied.losses
    other = train(mapped["faces"], FACES_B, mapped["masks"], None, ModelConfig(), config, "cpu",
                  checkpoint_dir=tmp_path / "other", index_a=np.array([1, 4]))
    assert other.losses != copied.losses  # the index chose what was trained on
