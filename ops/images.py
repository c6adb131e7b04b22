"""Loading users' still images: one robust path for every photo the pipeline reads.

Everything goes through Pillow with EXIF orientation applied, so a phone photo is
upright whichever library looks at it later. Damaged, huge, tiny or non-image files
raise BadMedia with a reason a user can act on.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from swapline.ops import storage
from swapline.ops.sandbox import IsolatedCrash, run_isolated

logger = logging.getLogger(__name__)



@functools.cache
def _register_heif() -> None:
    """HEIC/HEIF (iPhone photos) through pillow-heif, registered on first use, not at import."""
    from pillow_heif import register_heif_opener

    register_heif_opener()

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
MIN_SIDE = 32  # smaller images hold no usable face
JPEG_QUALITY = 95
# Pillow's own default; used when someone set MAX_IMAGE_PIXELS = None, because photos
# come from users and an unbounded decode can exhaust memory.
_DEFAULT_MAX_PIXELS = 89_478_485


class BadMedia(ValueError):
    """A user's image or video that cannot be used; the message names the file and why."""


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _pixel_limit() -> int:
    return Image.MAX_IMAGE_PIXELS or _DEFAULT_MAX_PIXELS


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Integer or float samples of unknown depth to 0..255, scaling instead of clamping
    (Pillow's own convert clamps 16-bit values, turning most of an image white)."""
    is_float = np.issubdtype(values.dtype, np.floating)
    values = values.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if is_float and peak <= 1.0:
        full_scale = 1.0  # float images are usually 0..1
    elif peak <= 255:
        full_scale = 255.0
    elif peak <= 65535:
        full_scale = 65535.0
    else:
        full_scale = peak
    return np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to RGB uint8; transparency is composited on black."""
    if image.mode.startswith("I;16"):
        # Pillow >= 10 keeps 16-bit greyscale as I;16*: the array is uint16, always 0..65535.
        grey = np.asarray(image).astype(np.float64)
        grey = np.rint(grey * (255.0 / 65535.0)).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode in {"I", "F"}:
        grey = _scale_to_uint8(np.asarray(image))
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or image.has_transparency_data:
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint16)
        alpha = rgba[:, :, 3:4]
        rgb = (rgba[:, :, :3] * alpha + 127) // 255
        return np.ascontiguousarray(rgb.astype(np.uint8))
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def _upright(image: Image.Image, path: Path) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block should not lose the photo
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", path, exc)
        return image


def _decode(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        # Above MAX_IMAGE_PIXELS Pillow only warns; for users' files that is already too big.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            if width * height > 2 * _pixel_limit():
                raise BadMedia(f"{path}: image is {width}x{height}, too large to decode safely")
            image.load()  # decodes now, so truncation surfaces here as OSError
            return _to_rgb(_upright(image, path))


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an upright RGB uint8 array (H, W, 3), or raise BadMedia."""
    path = Path(path)
    _register_heif()
    if not path.is_file():
        raise BadMedia(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise BadMedia(f"{path}: empty file (0 bytes)")
    try:
        rgb = _decode(path)
    except BadMedia:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadMedia(f"{path}: image too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise BadMedia(f"{path}: not an image in a format we can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError (and a few as the others).
        raise BadMedia(f"{path}: damaged or truncated image ({exc})") from exc
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise BadMedia(f"{path}: image is only {width}x{height} pixels (under {MIN_SIDE} px a side)")
    return rgb


def _normalize_batch(paths: list[str], out_dir: str) -> tuple[list[dict], list[dict]]:
    """Child-process body of normalize_photos (top-level so it pickles)."""
    kept: list[dict] = []
    skipped: list[dict] = []
    seen: dict[str, str] = {}
    for photo in paths:
        try:
            rgb = load_image(photo)
        except BadMedia as exc:
            logger.warning("skipping photo: %s", exc)
            skipped.append({"photo": photo, "reason": str(exc)})
            continue
        digest = storage.sha256_file(photo)
        if digest in seen:
            skipped.append({"photo": photo, "reason": f"duplicate of {seen[digest]}"})
            continue
        seen[digest] = photo
        name = f"p{digest[:16]}.jpg"
        storage.atomic_write_bytes(Path(out_dir) / name, encode_jpeg(rgb))
        height, width = rgb.shape[:2]
        kept.append({"photo": photo, "file": name, "sha256": digest, "width": width, "height": height})
    return kept, skipped


def _normalize_one_by_one(paths: list[str], out_dir: str) -> tuple[list[dict], list[dict]]:
    kept: list[dict] = []
    skipped: list[dict] = []
    for photo in paths:
        try:
            one_kept, one_skipped = run_isolated(_normalize_batch, [photo], out_dir, label=photo)
        except IsolatedCrash as exc:
            one_kept, one_skipped = [], [{"photo": photo, "reason": str(exc)}]
        known = {record["sha256"]: record["photo"] for record in kept}
        for record in one_kept:  # the per-file children cannot see each other's duplicates
            if record["sha256"] in known:
                one_skipped.append({"photo": photo, "reason": f"duplicate of {known[record['sha256']]}"})
            else:
                kept.append(record)
        skipped.extend(one_skipped)
    return kept, skipped


def normalize_photos(paths: list[Path], out_dir: Path) -> tuple[list[dict], list[dict]]:
    """Decode users' photos in a child process and write each as p<sha256[:16]>.jpg.

    Returns (kept, skipped): kept records {"photo", "file", "sha256" (of the original
    file), "width", "height"}; skipped records {"photo", "reason"}. If the batch child
    dies (a decoder crash), every file is retried in its own child so one bad file
    costs only itself.
    """
    names = [str(path) for path in paths]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if not names:
        return [], []
    try:
        return run_isolated(_normalize_batch, names, str(out_dir), label=f"{len(names)} photos")
    except IsolatedCrash as exc:
        logger.warning("photo batch crashed (%s); retrying one file per process", exc)
        return _normalize_one_by_one(names, str(out_dir))
