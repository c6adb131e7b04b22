"""User-supplied ONNX face models: where they are placed, which are there, and how they run.

Stronger models than the bundled MediaPipe/dlib ones (an SCRFD detector, a BiSeNet face parser,
an XSeg occlusion mask) ship in no package we may fetch, and swapline never downloads weights at
run time. So, as with FAN (ops/fan.py), a user places the file themselves: under a fixed name in
the MediaPipe models folder (`tflite.models_dir()`: $SWAPLINE_FACE_MODELS, else
<repo>/.cache/face_models). A missing file raises `OnnxModelMissing`, whose message names the
exact path, the file, where such a file is published and that swapline will not fetch it.

* `REGISTRY`: name -> `OnnxModelSpec` (accepted file names, where published, its loader).
* `available()`: which of them are placed; `load(name)`: the ready-to-call model.
* `session(path)`: one onnxruntime session per file per process, on CUDA when onnxruntime
  offers it, else the CPU.

onnxruntime is imported inside functions: this module is imported with the code location.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from swapline.ops import tflite

logger = logging.getLogger(__name__)

Folder = str | os.PathLike[str] | None


class OnnxModelMissing(FileNotFoundError):
    """A user-supplied ONNX model is not in the models folder; the message says where to put it."""


@dataclass(frozen=True)
class OnnxModelSpec:
    name: str
    role: str  # "detector" or "parser": what a caller may use it for
    files: tuple[str, ...]  # accepted names, preferred first; the first is the one errors ask for
    what: str  # for messages: what the file is
    source: str  # where such a file is published (never fetched by swapline)
    loader: Callable[[Folder], Any]  # models folder -> the ready-to-call model


def _scrfd(folder: Folder) -> Any:
    from swapline.ops.scrfd import ScrfdDetector

    return ScrfdDetector(folder)


def _parser(kind: str) -> Callable[[Folder], Any]:
    def load(folder: Folder) -> Any:
        from swapline.ops.face_parsing import FaceParser

        return FaceParser(folder, kind)

    return load


REGISTRY: dict[str, OnnxModelSpec] = {
    spec.name: spec
    for spec in (
        OnnxModelSpec(
            "scrfd", "detector",
            # det_10g.onnx is the same network as packed in InsightFace's buffalo_l.zip.
            ("scrfd_10g_bnkps.onnx", "det_10g.onnx"),
            "InsightFace's SCRFD-10GF face detector with 5 keypoints (1x3x640x640 in, 9 outputs)",
            "InsightFace's model zoo (https://github.com/deepinsight/insightface/tree/master/detection/scrfd, "
            "'SCRFD_10G_KPS'; also det_10g.onnx inside https://github.com/deepinsight/insightface/releases/"
            "download/v0.7/buffalo_l.zip). InsightFace's models are licensed for non-commercial research only",
            _scrfd,
        ),
        OnnxModelSpec(
            "bisenet", "parser",
            ("bisenet_resnet_34.onnx", "bisenet_resnet_18.onnx"),
            "a BiSeNet face parser trained on CelebAMask-HQ (1x3x512x512 RGB in, 19 classes out)",
            "FaceFusion's assets (https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/"
            "bisenet_resnet_34.onnx), an ONNX export of zllrunning/face-parsing.PyTorch's network (MIT)",
            _parser("bisenet"),
        ),
        OnnxModelSpec(
            "xseg", "parser",
            ("xseg.onnx", "xseg_1.onnx"),
            "an XSeg face mask (DeepFaceLab's segmenter: 1x256x256x3 in 0..1, one channel out = visible face)",
            "FaceFusion's assets (https://github.com/facefusion/facefusion-assets/releases/download/models-3.1.0/"
            "xseg_1.onnx, GPL-3.0 like DeepFaceLab), or your own XSeg exported from DeepFaceLab/DeepFaceLive",
            _parser("xseg"),
        ),
    )
}


def spec(name: str) -> OnnxModelSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown ONNX face model {name!r}; expected one of {sorted(REGISTRY)}")
    return REGISTRY[name]


def find(name: str, folder: Folder = None) -> Path | None:
    """The placed file for registry entry `name` (the first accepted name present), else None."""
    base = tflite.models_dir(folder)
    return next((base / f for f in spec(name).files if (base / f).is_file()), None)


def missing_message(name: str, folder: Folder = None) -> str:
    entry = spec(name)
    target = tflite.models_dir(folder) / entry.files[0]
    others = f" ({', '.join(entry.files[1:])} is accepted too)" if entry.files[1:] else ""
    return (
        f"ONNX model {entry.name!r} not found: expected {target}{others}: {entry.what}. swapline never "
        f"downloads it (nor any model) at run time; such a file is published in {entry.source}. Fetch it "
        f"on any machine, check its licence, and copy it to\n  {target}\nAnother folder: set "
        f"${tflite.ENV_DIR} (or pass the models folder)."
    )


def model_path(name: str, folder: Folder = None) -> Path:
    """The placed file for `name`; OnnxModelMissing when none of its accepted names is there."""
    path = find(name, folder)
    if path is None:
        raise OnnxModelMissing(missing_message(name, folder))
    return path


def available(folder: Folder = None) -> dict[str, Path]:
    """Registry name -> placed file, for the user models present (in registry order)."""
    found = {name: find(name, folder) for name in REGISTRY}
    return {name: path for name, path in found.items() if path is not None}


def load(name: str, folder: Folder = None) -> Any:
    """The ready-to-call model for `name` (its spec's loader); OnnxModelMissing when not placed."""
    model_path(name, folder)  # the clear error before any loader runs
    return spec(name).loader(folder)


def providers() -> list[str]:
    """Execution providers in preference order: CUDA when this onnxruntime build offers it (the
    onnxruntime-gpu wheel), then the CPU, which every build has. Never requires a GPU."""
    import onnxruntime

    offered = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider",) if p in offered] + ["CPUExecutionProvider"]


def session(path: str | os.PathLike[str], threads: int = 0) -> Any:
    """The onnxruntime session for `path`, built once per process and file version (the file's
    mtime is in the key, so a model replaced while a process runs is picked up). `threads`:
    intra-op threads, 0 = onnxruntime's choice (one per physical core)."""
    path = Path(path)
    return _session(str(path), path.stat().st_mtime_ns, threads)


@lru_cache(maxsize=8)
def _session(path: str, mtime_ns: int, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # onnxruntime's run() may be called from several threads at once on one session.
    made = onnxruntime.InferenceSession(path, sess_options=options, providers=providers())
    logger.info("ONNX model %s loaded on %s", path, made.get_providers()[0])
    return made


def input_layout(shape: list[Any]) -> tuple[bool, int, int]:
    """(channels_last, height, width) of a 4-D image input's declared shape; dynamic sides
    (strings/None) come back as 0 for the caller to choose."""
    if len(shape) != 4:
        raise ValueError(f"expected a 4-D image input, got shape {shape}")
    channels_last = shape[3] in (1, 3) and shape[1] not in (1, 3)
    h, w = (shape[1], shape[2]) if channels_last else (shape[2], shape[3])
    return channels_last, h if isinstance(h, int) else 0, w if isinstance(w, int) else 0
