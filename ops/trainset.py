"""A faceset decoded once: faces, landmark-hull masks and crop-px landmarks as memory maps.

Training, evaluation and every resumed run read the same decoded arrays instead of decoding
the faceset's PNGs again (~2 ms a 256 px face with its mask: ~10 s for 5,000 faces). The
cache lives inside the faceset version folder it was decoded from, in `.decoded/<key>/`:

  - a faceset version folder never changes once published, so its folder names the content
    (the key adds each table file's name, size and mtime and the mask feather, so a table
    rewritten in place outside the store, as tests do, is decoded again rather than read stale);
  - `swapline gc` removes a version folder whole (ops/retention.py), so the cache (~1.3 GB
    per 5,000 faces) goes with its faceset: nothing to evict separately, nothing left behind
    (a run still reading it keeps its open maps: unlinked files live on until closed);
  - the version is the hash of what `build` wrote; the cache is added after publishing and
    nothing re-hashes a published folder, so it does not change the version.

Built in a temp folder beside it and renamed into place; two processes building at once both
decode, the first rename wins and the loser discards its copy (a rename onto a non-empty
folder fails). Files are fsynced before the rename: a power cut must not leave zeros that
open as faces. Arrays are written with plain file writes, batch by batch, and read through
np.load(mmap_mode="r"): memory holds one batch, never the faceset.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapline.ops.faces import hull_mask, transform_points
from swapline.ops.facesegments import segment_paths
from swapline.ops.facetable import decode_image, table_version

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when what the cache holds, or how it is computed, changes
DECODED = ".decoded"  # hidden: a faceset folder's listing stays the published files
BATCH = 256  # faces decoded per batch: ~50 MB of 256 px crops in memory at a time
FILES = ("faces.npy", "masks.npy", "points.npy", "face_ids.npy")


@dataclass(frozen=True)
class DecodedFaceset:
    folder: Path
    faces: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    masks: np.ndarray  # (N, S, S) uint8 0..255, memory-mapped
    points: np.ndarray  # (N, 68, 2) float32 landmarks in crop px
    face_ids: np.ndarray  # (N,) str, the table's row order

    def __len__(self) -> int:
        return len(self.face_ids)


def faceset_parquet(faceset: Path) -> Path:
    """A faceset folder or its faceset.parquet (a file, or a folder of segments) -> the parquet."""
    faceset = Path(faceset)
    return faceset if faceset.suffix == ".parquet" else faceset / "faceset.parquet"


def open_faceset(faceset: Path, feather: int = 5) -> DecodedFaceset:
    """The decoded arrays of a faceset (folder or faceset.parquet), decoding it on first use."""
    parquet = faceset_parquet(faceset)
    files = [(p.name, p.stat()) for p in segment_paths(parquet)]
    stamp = ":".join(f"{name}:{stat.st_size}:{stat.st_mtime_ns}" for name, stat in files)
    key = hashlib.sha256(f"{CACHE_VERSION}:{feather}:{stamp}".encode()).hexdigest()[:16]
    folder = parquet.parent / DECODED / key
    if folder.is_dir():
        try:
            return _open(folder)
        except (OSError, ValueError) as exc:  # damaged: set it aside (atomically) and decode again
            logger.warning("decoded faceset %s unreadable (%s): decoding again", folder, exc)
            _discard(folder)
    _build(parquet, folder, feather)
    return _open(folder)


def at_resolution(decoded: DecodedFaceset, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The faces (N,3,R,R) and masks (N,1,R,R), uint8 0..255, at a model's resolution: resized once
    per faceset version and resolution (the same resize the trainer did on every start: every
    resumed run then starts without it), kept beside the decoded arrays, memory-mapped."""
    folder = decoded.folder / f"r{resolution}"
    if not folder.is_dir():
        _build_resized(decoded, resolution, folder)
    try:
        return tuple(np.load(folder / name, mmap_mode="r", allow_pickle=False) for name in ("faces.npy", "masks.npy"))  # type: ignore[return-value]
    except (OSError, ValueError) as exc:  # damaged: set aside and resize again
        logger.warning("resized faceset %s unreadable (%s): resizing again", folder, exc)
        _discard(folder)
        _build_resized(decoded, resolution, folder)
        return tuple(np.load(folder / name, mmap_mode="r", allow_pickle=False) for name in ("faces.npy", "masks.npy"))  # type: ignore[return-value]


def _build_resized(decoded: DecodedFaceset, resolution: int, final: Path) -> None:
    import torch

    def resize_into(tmp: Path) -> None:
        n, every = len(decoded), np.arange(len(decoded))
        for name, array, channels in (("faces.npy", decoded.faces, 3), ("masks.npy", decoded.masks, 1)):
            out = np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np.uint8, shape=(n, channels, resolution, resolution))
            for i in range(0, n, BATCH):
                out[i : i + BATCH] = rows_to_device(array, every[i : i + BATCH], resolution, torch.device("cpu")).numpy()
            out.flush()
            del out

    _build_folder(final, resize_into)


def load_faceset(path: Path, feather: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """faces (N, S, S, 3) uint8 and masks (N, S, S) uint8 (0..255) of a faceset, memory-mapped."""
    decoded = open_faceset(path, feather)
    return decoded.faces, decoded.masks


def take(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """array[index] as an ordinary array. From a memory map the rows' pages are then dropped
    from this process (they stay in the page cache): reading a faceset chunk by chunk keeps
    the resident set at one chunk, where the mapping would otherwise keep every page read."""
    rows = array[np.asarray(index)]  # fancy indexing: a copy of these rows only
    mapping = getattr(array, "_mmap", None)  # np.memmap's mapping (shared by its slices)
    # Shared maps only: in a copy-on-write ("c") map, dropping pages would drop the writes.
    if isinstance(mapping, mmap.mmap) and getattr(array, "mode", "") in ("r", "r+") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
    return rows


def rows_to_device(array: np.ndarray, index: np.ndarray, resolution: int, device, scale: float = 1.0):
    """Rows `index` of (N,S,S,C) or (N,S,S) images -> uint8 tensor (len(index),C,R,R) on
    `device`, a chunk at a time: host memory holds one chunk at full size, never the faceset."""
    import torch

    from swapline.ops.inference import CHUNK, images_to_device

    out = None
    for i in range(0, len(index), CHUNK):
        rows = take(array, index[i : i + CHUNK])  # (n,S,S,C) or (n,S,S)
        part = images_to_device(rows if rows.ndim == 4 else rows[..., None], resolution, device, scale)  # (n,C,R,R)
        if out is None:
            out = torch.empty((len(index), *part.shape[1:]), dtype=torch.uint8, device=device)
        out[i : i + len(part)] = part
    return out


def rows_max(array: np.ndarray, index: np.ndarray, chunk: int = BATCH) -> int:
    """Largest value in rows `index`, read a chunk at a time."""
    return max(int(take(array, index[i : i + chunk]).max(initial=0)) for i in range(0, len(index), chunk))


def _open(folder: Path) -> DecodedFaceset:
    faces, masks, points, ids = (np.load(folder / name, mmap_mode="r", allow_pickle=False) for name in FILES)
    if not len(faces) == len(masks) == len(points) == len(ids) or faces.shape[:3] != masks.shape:
        raise ValueError(f"{folder}: arrays of different lengths")
    return DecodedFaceset(folder, faces, masks, np.array(points), np.array(ids))  # the small ones in memory


def _discard(folder: Path) -> None:
    aside = folder.with_name(f".trash-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, aside)
    except OSError:
        return  # another process moved it already
    shutil.rmtree(aside, ignore_errors=True)


def _build(parquet: Path, final: Path, feather: int) -> None:
    import pyarrow.parquet as pq

    table_version(parquet)  # refuses a file that is not a face table
    files = [pq.ParquetFile(path) for path in segment_paths(parquet)]
    n = sum(file.metadata.num_rows for file in files)
    if n == 0:
        raise ValueError(f"{parquet} holds no faces: nothing to train on")
    _build_folder(final, lambda tmp: _decode_into(tmp, files, n, feather))
    logger.info("decoded %d faces of %s into %s", n, parquet, final)


def _build_folder(final: Path, build) -> None:
    """`build(tmp)` into a temp folder beside `final`, then rename it into place; when another
    process got there first (same content: the key names it), keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".tmp-"))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # a rename onto a non-empty folder fails: theirs stays
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _decode_into(tmp: Path, files: list, n: int, feather: int) -> None:
    """Decode every face of the parquet `files` batch by batch, appending to the .npy files."""
    points, ids, handles = [], [], {}
    workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        _decode_batches(files, n, feather, workers, tmp, handles, points, ids)
        for handle in handles.values():
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        for handle in handles.values():
            handle.close()
    for name, array in (("points.npy", np.concatenate(points).astype(np.float32)), ("face_ids.npy", np.asarray(ids))):
        with open(tmp / name, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())


def _decode_batches(files: list, n: int, feather: int, workers: int, tmp: Path, handles: dict, points: list, ids: list) -> None:
    size = None
    batches = (batch for file in files for batch in file.iter_batches(batch_size=BATCH, columns=["face_id", "landmarks", "matrix", "image"]))
    with ThreadPoolExecutor(workers) as pool:  # cv2 decodes and blurs without the GIL
        for batch in batches:
            if not batch.num_rows:
                continue
            rows = batch.to_pydict()
            pts = np.stack([_crop_points(lm, m) for lm, m in zip(rows["landmarks"], rows["matrix"])])  # (B, 68, 2)
            size = size or decode_image(rows["image"][0]).shape[0]
            decoded = list(pool.map(lambda job: _decode(*job, size, feather), zip(rows["image"], pts)))
            if not handles:
                handles.update(faces=_npy(tmp / "faces.npy", (n, size, size, 3)), masks=_npy(tmp / "masks.npy", (n, size, size)))
            handles["faces"].write(np.stack([face for face, _ in decoded]).tobytes())  # (B, S, S, 3)
            handles["masks"].write(np.stack([mask for _, mask in decoded]).tobytes())  # (B, S, S)
            points.append(pts)
            ids += rows["face_id"]


def _npy(path: Path, shape: tuple[int, ...]):
    """An open .npy file of uint8 `shape` with its header written: the rows follow in order."""
    handle = open(path, "wb")
    np.lib.format.write_array_header_1_0(handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return handle


def _crop_points(landmarks, matrix) -> np.ndarray:
    """Source-frame landmarks (136,) through the alignment matrix (6,) -> crop px (68, 2)."""
    return transform_points(np.asarray(landmarks, np.float32).reshape(68, 2), np.asarray(matrix, np.float64).reshape(2, 3))


def _decode(png: bytes, points: np.ndarray, size: int, feather: int) -> tuple[np.ndarray, np.ndarray]:
    face = decode_image(png)  # (S, S, 3)
    if face.shape != (size, size, 3):
        raise ValueError(f"face crops of different sizes in one faceset: {face.shape} and {size} px")
    return face, np.round(hull_mask(points, size, feather) * 255).astype(np.uint8)  # (S, S)
