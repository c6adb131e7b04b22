"""The project file: one YAML that names the people, where their faces come from, the swaps
to train and the videos to convert.

Everything a user can get wrong is caught here with a message naming the file, the key and
what to do; the rest of swapline trusts a loaded `Project`.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The settings of each stage are defined once, by the ops that use them; the project file embeds them.
from swapline.ops.consent import Consent
from swapline.ops.convert_options import ConvertOptions as ConversionOptions
from swapline.ops.download_settings import DownloadSettings
from swapline.ops.faces import AnalyzerSettings
from swapline.ops.faceset import FacesetSettings
from swapline.ops.listing import Selection
from swapline.ops.model_config import ModelConfig
from swapline.ops.train_config import TrainConfig

PROJECT_ENV = "SWAPLINE_PROJECT"
DEFAULT_PROJECT = "swapline.yaml"
SLUG = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class ProjectError(ValueError):
    """A mistake in the user's project file, already phrased for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"'{value}' is not an http(s) URL (file:// and other schemes are refused)")
    return value


class Source(Selection):
    """Exactly one of `url`, `video` or `photos`. A URL may list several videos (a playlist, a
    channel, a feed, a page, a search: whatever yt-dlp lists); the selection fields (from
    swapline.ops.listing.Selection: max_entries, after, min/max_duration, title, exclude) pick
    which of them are collected."""

    url: str | None = Field(default=None, description="Anything yt-dlp supports (http/https).")
    video: Path | None = Field(default=None, description="A local video file.")
    photos: Path | None = Field(default=None, description="A folder of photos.")
    name: str | None = Field(default=None, description="Optional label used in the partition key.")
    # Set by the loader: the location exactly as the user wrote it, so keys survive moving the project.
    as_written: str | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Source":
        given = [k for k in ("url", "video", "photos") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each source needs exactly one of url:, video: or photos:")
        if self.url is not None:
            _check_url(self.url)
        elif chosen := sorted(k for k, f in Selection.model_fields.items() if getattr(self, k) != f.get_default(call_default_factory=True)):
            raise ValueError(f"{', '.join(chosen)}: only a url: source lists entries to select from")
        return self

    @property
    def kind(self) -> str:
        return "url" if self.url else "video" if self.video else "photos"

    @property
    def location(self) -> str:
        return str(self.url or self.video or self.photos)

    def key(self, identity: str) -> str:
        """Stable partition key from identity + source: reordering the list changes nothing."""
        digest = hashlib.sha1(f"{identity}|{self.kind}|{self.as_written or self.location}".encode()).hexdigest()[:8]
        stem = self.name or Path(urlparse(self.location).path).stem or self.kind
        label = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")[:24] or self.kind
        return f"{self.kind}_{label}_{digest}"


class Identity(_Strict):
    consent: Consent = Field(description="Required: training and conversion refuse an identity without live consent.")
    sources: list[Source] = Field(min_length=1, description="Where this person's faces come from.")
    reference_photos: list[Path] = Field(default_factory=list, description="Photos that pick this person out of crowds.")

    @model_validator(mode="after")
    def _unique_sources(self) -> "Identity":
        seen = [s.location for s in self.sources]
        if len(seen) != len(set(seen)):
            raise ValueError("the same source is listed twice")
        return self


class Swap(_Strict):
    """A swap to train. Model and training defaults are the ops' own (ModelConfig, TrainConfig)."""

    a: str = Field(description="Identity A.")
    b: str = Field(description="Identity B.")
    resolution: Literal[64, 128, 256] = Field(default=ModelConfig.resolution, description="Model face size in pixels.")
    preset: Literal["lite", "original", "large"] = Field(default=ModelConfig.preset, description="Network width.")
    iterations: int = Field(default=20000, ge=1, description="Training steps in total (resumes count).")
    batch_size: int = Field(default=TrainConfig.batch_size, ge=1, le=1024, description="Faces per identity per step.")
    parent: str | None = Field(default=None, description="Another swap (same resolution and preset) whose trained model "
                               "this one starts from when it has no checkpoint of its own: training converges much sooner.")
    warm_start: Literal["encoder", "all"] = Field(default="encoder", description="What is taken from the parent: the "
                                                  "shared encoder only, or the decoders too (when the identities are alike).")
    max_minutes: float | None = Field(default=None, gt=0, description="Wall-clock budget of one training run; the "
                                      "next materialization resumes where it stopped. None: no budget.")
    target_loss: float | None = Field(default=TrainConfig.target_loss, gt=0, description="Stop once both sides' mean training loss is at "
                                      "or below this. None: train to `iterations`.")
    checkpoint_minutes: float = Field(default=TrainConfig.checkpoint_minutes, gt=0, description="Minutes between work checkpoints (a crash loses "
                                      "at most this much training).")
    compile: bool = Field(default=TrainConfig.compile, description="torch.compile the networks on CUDA (ignored on CPU, where it costs "
                          "more than it saves).")
    gpus: int = Field(default=TrainConfig.gpus, ge=1, le=64, description="Train data-parallel on this many processes "
                      "(DDP under torchrun; one per GPU, or CPU processes with gloo). batch_size stays the global batch "
                      "per side and must be divisible by it.")
    ddp_backend: Literal["auto", "nccl", "gloo"] = Field(default="auto", description="torch.distributed backend with "
                                                         "gpus > 1: auto is nccl on CUDA, gloo on CPU.")
    loss: Literal["l1", "mse"] = Field(default=TrainConfig.loss, description="Masked reconstruction loss.")
    ssim_weight: float = Field(default=TrainConfig.ssim_weight, ge=0, description="Weight of the (1 - SSIM) term; 0 turns it off.")
    mask_weight: float = Field(default=TrainConfig.mask_weight, ge=0, description="Weight of the learned mask's loss against the landmark hull.")

    @model_validator(mode="after")
    def _even_shares(self) -> "Swap":
        if self.batch_size % self.gpus:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by gpus {self.gpus}: each process takes an "
                             "equal share of the global batch")
        return self


class Conversion(_Strict):
    swap: str = Field(description="The swap whose model converts this video.")
    video: str = Field(description="A local video path or an http(s) URL.")
    direction: Literal["a_to_b", "b_to_a"] = Field(description="a_to_b: the video shows A, B's face is put in.")
    options: ConversionOptions = Field(default_factory=ConversionOptions)

    @property
    def is_url(self) -> bool:
        return urlparse(self.video).scheme in ("http", "https")

    def sides(self, swap: Swap) -> tuple[str, str]:
        """(identity shown in the video, identity whose face is rendered)."""
        return (swap.a, swap.b) if self.direction == "a_to_b" else (swap.b, swap.a)


class Extraction(AnalyzerSettings):
    """`extraction:`: the face analyzer's settings (swapline.ops.faces.AnalyzerSettings, defined
    there once) plus how frames are sampled and who is kept."""

    identity_distance: float = Field(default=0.6, gt=0, le=2, description="Max embedding distance to a reference photo to keep a face.")
    sample_fps: float = Field(default=20.0, gt=0, le=240, description="Frames per second sampled from videos.")
    skip_similar: float = Field(default=1.0, ge=0, description="Skip frames whose mean abs difference is below this.")
    max_frames: int | None = Field(default=None, ge=1, description="Cap on frames sampled per video (None: all).")
    workers: int = Field(default=2, ge=0, le=256, description="Processes detecting faces in parallel, at most one per CPU core (0: one per core); changes speed, never results.")


class Checks(_Strict):
    """Thresholds of the data-sufficiency checks on each faceset (see quality_checks/)."""

    min_faces: int = Field(default=25, ge=1, description="Below this many faces the faceset check fails with ERROR and blocks training.")
    recommended_faces: int = Field(default=300, ge=1, description="Below this many faces the check warns (300-2,000 train well).")
    max_source_share: float = Field(default=0.65, gt=0, le=1, description="Warn when one source supplies more than this share of the faces.")
    max_blur_share: float = Field(default=0.5, ge=0, le=1, description="Warn when more than this share of the raw faces were dropped as blurry.")
    max_duplicate_share: float = Field(default=0.9, ge=0, le=1, description="Warn when more than this share of the raw faces were near-duplicates.")
    yaw_bins: list[float] = Field(default=[-60, -45, -30, -15, 0, 15, 30, 45, 60], min_length=2, description="Yaw bin edges in degrees (yaw > 0: nose toward the image's right).")
    pitch_bins: list[float] = Field(default=[-45, -30, -15, 0, 15, 30, 45], min_length=2, description="Pitch bin edges in degrees (pitch > 0: face tilted up).")
    min_faces_per_bin: int = Field(default=5, ge=1, description="A pose bin with fewer faces than this counts as missing.")
    expected_sharpness: float = Field(default=30.0, ge=0, description="Per-face expectation: variance of Laplacian at least this "
                                      "(a higher bar than curation.min_sharpness, below which faces are dropped).")
    expected_face_size: float = Field(default=64.0, ge=0, description="Per-face expectation: face size (source px) at least this "
                                      "(curation.min_face_size drops smaller ones).")
    brightness_range: tuple[float, float] = Field(default=(40.0, 220.0), description="Per-face expectation: mean luma within this range (dark faces train badly).")
    max_abs_yaw: float = Field(default=75.0, gt=0, description="Per-face expectation: |yaw| at most this (beyond, landmarks are unreliable).")
    min_landmarks_in_box: float = Field(default=0.9, ge=0, le=1, description="Per-face expectation: share of landmarks inside the detector box (grown by 25%).")
    mostly: float = Field(default=0.9, gt=0, le=1, description="Share of faces that must meet each per-face expectation.")

    @field_validator("yaw_bins", "pitch_bins")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("bin edges must be strictly increasing")
        return edges

    @model_validator(mode="after")
    def _ordered(self) -> "Checks":
        if self.min_faces > self.recommended_faces:
            raise ValueError("min_faces must not exceed recommended_faces")
        return self


Name = Annotated[str, Field(pattern=SLUG.pattern)]


class Project(_Strict):
    identities: dict[Name, Identity] = Field(min_length=1)
    swaps: dict[Name, Swap] = Field(default_factory=dict)
    conversions: dict[Name, Conversion] = Field(default_factory=dict)
    extraction: Extraction = Field(default_factory=Extraction)
    curation: FacesetSettings = Field(default_factory=FacesetSettings, description="How each faceset is filtered and deduplicated.")
    checks: Checks = Field(default_factory=Checks, description="Thresholds of the faceset data checks.")
    downloads: DownloadSettings = Field(default_factory=DownloadSettings, description="How URL sources are downloaded: "
                                        "size cap, stall timeout, retries, resolution, per-host pause.")
    collect_schedule: str = Field(default="0 3 * * *", description="Cron for re-running collection (daily by default).")

    @model_validator(mode="after")
    def _references(self) -> "Project":
        for name, swap in self.swaps.items():
            for side in ("a", "b"):
                who = getattr(swap, side)
                if who not in self.identities:
                    raise ValueError(f"swaps.{name}.{side}: unknown identity '{who}' (known: {', '.join(self.identities)})")
            if swap.a == swap.b:
                raise ValueError(f"swaps.{name}: a and b must be different identities")
            self._check_parent(name)
        for name, conv in self.conversions.items():
            if conv.swap not in self.swaps:
                raise ValueError(f"conversions.{name}.swap: unknown swap '{conv.swap}' (known: {', '.join(self.swaps) or 'none'})")
        return self

    def _check_parent(self, name: str) -> None:
        """The parent names another swap, and following parents never comes back (the parent's
        model is an upstream asset: a loop would be a cycle in the asset graph)."""
        seen, current = [name], self.swaps[name].parent
        while current is not None:
            if current not in self.swaps:
                raise ValueError(f"swaps.{seen[-1]}.parent: unknown swap '{current}' (known: {', '.join(self.swaps)})")
            if current in seen:
                raise ValueError(f"swaps.{name}.parent: a swap cannot descend from itself ({' -> '.join(seen + [current])})")
            seen.append(current)
            current = self.swaps[current].parent

    def source_keys(self, identity: str) -> dict[str, Source]:
        return {src.key(identity): src for src in self.identities[identity].sources}

    def source_showing(self, conversion: str) -> tuple[str, str] | None:
        """(identity, source key) of a source that is the same video as the conversion's target
        (the same file or URL), whose extracted faces the target's analysis reuses; else None."""
        video = self.conversions[conversion].video
        for identity in self.identities:
            for key, src in self.source_keys(identity).items():
                if src.kind != "photos" and str(src.url or src.video) == video:
                    return identity, key
        return None


def project_path(explicit: str | Path | None = None) -> Path:
    """The project file: explicit path, else $SWAPLINE_PROJECT, else ./swapline.yaml (read at call time)."""
    return Path(explicit or os.environ.get(PROJECT_ENV) or DEFAULT_PROJECT).expanduser().resolve()


def _resolve_paths(raw: dict, base: Path) -> None:
    """Make local paths relative to the project file's folder, before validation."""
    for ident in (raw.get("identities") or {}).values():
        if not isinstance(ident, dict):
            continue
        for src in ident.get("sources") or []:
            for key in ("video", "photos"):
                if isinstance(src, dict) and isinstance(src.get(key), str):
                    src["as_written"] = src[key]
                    src[key] = str((base / src[key]).expanduser())
        refs = ident.get("reference_photos")
        if isinstance(refs, list):
            ident["reference_photos"] = [str((base / r).expanduser()) if isinstance(r, str) else r for r in refs]
    for conv in (raw.get("conversions") or {}).values():
        if isinstance(conv, dict) and isinstance(conv.get("video"), str) and "://" not in conv["video"]:
            conv["video"] = str((base / conv["video"]).expanduser())


def _missing_paths(project: Project) -> list[str]:
    problems = []
    for name, ident in project.identities.items():
        for i, src in enumerate(ident.sources):
            if src.video is not None and not src.video.is_file():
                problems.append(f"identities.{name}.sources[{i}].video: no file at {src.video}")
            if src.photos is not None and not src.photos.is_dir():
                problems.append(f"identities.{name}.sources[{i}].photos: no folder at {src.photos}")
        for j, ref in enumerate(ident.reference_photos):
            if not ref.is_file():
                problems.append(f"identities.{name}.reference_photos[{j}]: no file at {ref}")
    for name, conv in project.conversions.items():
        if not conv.is_url and not Path(conv.video).is_file():
            problems.append(f"conversions.{name}.video: no file at {conv.video} (give a local file or an http(s) URL)")
    return problems


_HINTS = {
    "extra_forbidden": "unknown key: remove it or check its spelling",
    "missing": "required: add it",
    "string_pattern_mismatch": "names must be lowercase slugs: a letter, then letters, digits or _ (max 40)",
}


def _format(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-after"))
    hint = _HINTS.get(error["type"], error["msg"].removeprefix("Value error, "))
    if where.endswith(".consent") and error["type"] == "missing":
        hint = "every identity must declare consent: given_by, date, evidence"
    return f"  {where}: {hint}" if where else f"  {hint}"


def load_project(path: str | Path | None = None) -> Project:
    """Read and validate a project file; every user mistake becomes one ProjectError."""
    path = project_path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: project file not found. Pass --project, or set ${PROJECT_ENV}.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProjectError(f"{path}: the top level must be a mapping with identities:, swaps:, conversions:")
    _resolve_paths(raw, path.parent)
    try:
        project = Project.model_validate(raw)
    except ValidationError as exc:
        lines = "\n".join(_format(e) for e in exc.errors())
        raise ProjectError(f"{path}: {exc.error_count()} problem(s):\n{lines}") from None
    if problems := _missing_paths(project):
        raise ProjectError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
    return project
