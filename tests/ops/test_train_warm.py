"""Warm start: a swap named as `parent` lends its encoder (or everything) to a fresh model."""

import pytest
import torch
from pydantic import ValidationError

from swapline.ops.checkpoint import CheckpointError
from swapline.ops.model import FaceSwapAE, ModelConfig
from swapline.ops.train import TrainConfig, load_for_inference, train, warm_start
from swapline.project import Project
from tests.ops.test_train_resume import FACES_A, FACES_B


def _parent(tmp_path):
    train(FACES_A[:4], FACES_B[:4], None, None, ModelConfig(), TrainConfig(iterations=2, batch_size=2, seed=7), "cpu",
          checkpoint_dir=tmp_path / "parent")
    return load_for_inference(tmp_path / "parent").state_dict()


def _same(model, parent, prefix):
    return all(torch.equal(v, parent[k]) for k, v in model.state_dict().items() if k.startswith(prefix))


def test_warm_start_copies_the_encoder_only(tmp_path):
    parent = _parent(tmp_path)
    model = FaceSwapAE(ModelConfig())
    assert not _same(model, parent, "encoder.")
    keys = warm_start(model, tmp_path / "parent", "encoder")
    assert keys and all(k.startswith("encoder.") for k in keys)
    assert _same(model, parent, "encoder.") and not _same(model, parent, "decoders.")
    warm_start(model, tmp_path / "parent", "all")
    assert _same(model, parent, "")


def test_train_warm_starts_only_when_fresh(tmp_path):
    parent = _parent(tmp_path)
    config = TrainConfig(iterations=0, batch_size=2)
    child = train(FACES_A[:4], FACES_B[:4], None, None, ModelConfig(), config, "cpu", checkpoint_dir=tmp_path / "c",
                  work_dir=tmp_path / "work", warm_from=tmp_path / "parent")
    assert child.step == 0 and _same(load_for_inference(tmp_path / "c"), parent, "encoder.")
    assert not _same(load_for_inference(tmp_path / "c"), parent, "decoders.")


def test_warm_start_from_another_architecture_is_refused(tmp_path):
    _parent(tmp_path)
    with pytest.raises(CheckpointError, match="do not fit"):
        warm_start(FaceSwapAE(ModelConfig(preset="original")), tmp_path / "parent")


def _project(**swaps):
    consent = {"given_by": "Anna Example", "date": "2024-05-01", "evidence": "form #12"}
    people = {n: {"consent": consent, "sources": [{"url": f"https://example.org/{n}.mp4"}]} for n in ("anna", "ben")}
    return Project.model_validate({"identities": people, "swaps": swaps})


def test_project_validates_the_parent():
    ab = {"a": "anna", "b": "ben"}
    project = _project(one=ab, two={**ab, "parent": "one", "warm_start": "all"})
    assert (project.swaps["two"].parent, project.swaps["two"].warm_start) == ("one", "all")
    with pytest.raises(ValidationError, match="unknown swap 'nope'"):
        _project(one={**ab, "parent": "nope"})
    with pytest.raises(ValidationError, match="descend from itself"):
        _project(one={**ab, "parent": "one"})
    with pytest.raises(ValidationError, match="descend from itself"):
        _project(one={**ab, "parent": "two"}, two={**ab, "parent": "one"})
