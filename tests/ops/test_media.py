"""ops.media / ops.images on the real demo clips and on damaged inputs built here."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from swapline.ops import images, media, storage
from swapline.ops.media import BadMedia, IsolatedCrash

MEDIA = Path(__file__).resolve().parents[2] / "demo" / "media"
WOLF = MEDIA / "WolfgangLanger_Pexels.mp4"
SINGLE = MEDIA / "single_face.mp4"


def _cut(src: Path, dest: Path, size: int) -> Path:
    dest.write_bytes(src.read_bytes()[:size])
    return dest


def _streams(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "frames": video.frames,
            "fps": video.average_rate,
            "video_s": float(video.duration * video.time_base),
            "audio": audio.codec_context.name if audio else None,
            "metadata": dict(container.metadata),
        }


# ---------------------------------------------------------------- videos


def test_probe_reads_the_header():
    info = media.probe(SINGLE)
    assert (info.width, info.height, info.frames, info.codec) == (640, 360, 72, "h264")
    assert info.fps == pytest.approx(30) and info.duration == pytest.approx(2.4)
    assert info.has_audio


def test_sample_video_keeps_about_sample_fps(tmp_path):
    result = media.sample_video(SINGLE, tmp_path, sample_fps=10)
    assert 22 <= len(result.frames) <= 25 and result.decoded == 72
    stamps = [frame.timestamp for frame in result.frames]
    assert stamps == sorted(set(stamps)) and stamps[1] - stamps[0] == pytest.approx(0.1, abs=0.034)
    # Only the sampled frames were written, each named after its source index.
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.file for f in result.frames]
    first = result.frames[0]
    assert first.file == f"f{first.index:06d}.jpg"
    assert storage.sha256_file(tmp_path / first.file) == first.sha256
    assert Image.open(tmp_path / first.file).size == (640, 360)


def test_sample_video_at_source_rate_keeps_every_frame_of_a_vfr_clip(tmp_path):
    result = media.sample_video(MEDIA / "noface_face.mov", tmp_path, sample_fps=100, max_frames=60)
    assert [f.index for f in result.frames] == list(range(60))
    assert result.info.codec == "hevc"


def test_skip_similar_drops_a_static_clip(tmp_path):
    still = np.full((64, 96, 3), 120, np.uint8)
    clip = tmp_path / "static.mp4"
    media.write_video([still] * 20, clip, 10)
    result = media.sample_video(clip, tmp_path / "frames", sample_fps=10, skip_similar=2.0)
    assert len(result.frames) == 1 and result.skipped_similar == 19 and result.decoded == 20


@pytest.mark.parametrize("size", [30_000, 800_000])
def test_truncated_video_is_refused_without_killing_pytest(tmp_path, size):
    broken = _cut(WOLF, tmp_path / "cut.mp4", size)
    with pytest.raises((BadMedia, IsolatedCrash), match="cut.mp4"):
        media.sample_video(broken, tmp_path / "frames", sample_fps=2)
    with pytest.raises((BadMedia, IsolatedCrash), match="cut.mp4"):
        media.verify_video(broken)


def test_not_a_video_is_bad_media(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(BadMedia, match="fake.mp4"):
        media.probe(fake)
    with pytest.raises(BadMedia, match="empty"):
        media.verify_video(_cut(SINGLE, tmp_path / "empty.mp4", 0))


def test_verify_video_decodes_everything():
    info = media.verify_video(WOLF)
    assert info.frames == 472 and info.fps == pytest.approx(23.976, abs=0.001)


def test_write_video_round_trip_keeps_frames_timing_audio_and_tags(tmp_path):
    source = _streams(SINGLE)
    frames = [rgb for _, _, rgb in media.iter_video(SINGLE)]
    tags = {"title": "swapped", "comment": "synthetic", "description": "made by swapline",
            "swapline_source": "single_face.mp4"}
    out = tmp_path / "out.mp4"
    result = media.write_video(iter(frames), out, Fraction(30), audio_from=SINGLE, metadata=tags)
    assert result == {"frames": 72, "path": str(out), "audio": True}
    written = _streams(out)
    assert written["frames"] == source["frames"] == 72 and written["fps"] == source["fps"]
    assert written["video_s"] == pytest.approx(source["video_s"], abs=1 / 30)
    assert written["audio"] == source["audio"]  # mp3 is copied as it is
    assert tags.items() <= written["metadata"].items()
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temp file left


def _pcm_clip(path: Path) -> Path:
    """A 1 s 64x32 clip with PCM audio, which MP4 cannot carry as it is."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 32, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((32, 64, 3), i * 10, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        for i in range(10):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16", layout="mono")
            samples.sample_rate, samples.pts = 16000, i * 1600
            out.mux(audio.encode(samples))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path


def test_write_video_reencodes_other_audio_and_pads_odd_sizes(tmp_path):
    source = _pcm_clip(tmp_path / "pcm.mkv")
    odd = [np.full((33, 65, 3), 90, np.uint8)] * 25
    result = media.write_video(odd, tmp_path / "out.mp4", 25.0, audio_from=source, metadata={})
    assert result["audio"] and result["frames"] == 25
    info = media.probe(tmp_path / "out.mp4")
    assert (info.width, info.height) == (66, 34) and _streams(tmp_path / "out.mp4")["audio"] == "aac"


def test_write_video_failure_leaves_nothing(tmp_path):
    def frames():
        yield np.zeros((32, 32, 3), np.uint8)
        raise RuntimeError("upstream failed")

    with pytest.raises(RuntimeError, match="upstream failed"):
        media.write_video(frames(), tmp_path / "out.mp4", 10)
    assert list(tmp_path.iterdir()) == []


def test_display_rotation_is_applied(tmp_path):
    clip = tmp_path / "rotated.mp4"
    picture = np.zeros((32, 64, 3), np.uint8)
    picture[:, :8] = 255  # a white strip on the left
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 32, "yuv420p"
        video.set_display_rotation(90)  # shown turned 90 degrees counterclockwise
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    index, timestamp, rgb = next(iter(media.iter_video(clip)))
    assert (index, timestamp, rgb.shape) == (0, 0.0, (64, 32, 3))
    assert rgb[-8:].mean() > 200 and rgb[:-8].mean() < 50  # the strip is now at the bottom
    info = media.verify_video(clip)
    assert (info.width, info.height, info.rotation) == (32, 64, 90)


# ---------------------------------------------------------------- images


def test_load_image_good_inputs():
    assert media.load_image(MEDIA / "single_face.jpg").shape == (562, 572, 3)
    grey = media.load_image(MEDIA / "BWPictureHuman.jpg")
    assert grey.shape == (1912, 2560, 3) and (grey[..., 0] == grey[..., 2]).all()
    rgba = np.asarray(Image.open(MEDIA / "Image_with_alpha.png"))
    rgb = media.load_image(MEDIA / "Image_with_alpha.png")
    assert rgb.shape == rgba.shape[:2] + (3,) and rgb.dtype == np.uint8
    assert (rgb[rgba[..., 3] == 0] == 0).all()  # transparent pixels composited on black


def test_load_image_applies_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (80, 40), (200, 10, 10)).save(path, exif=exif)
    assert media.load_image(path).shape == (80, 40, 3)


def test_load_image_converts_modes(tmp_path):
    Image.new("L", (40, 40), 77).save(tmp_path / "grey.png")
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([0, 0, 0, 255, 255, 255] * 128)
    palette.save(tmp_path / "transparent.png", transparency=1)
    assert (media.load_image(tmp_path / "grey.png") == 77).all()
    red = media.load_image(tmp_path / "cmyk.jpg")[20, 20]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    assert (media.load_image(tmp_path / "transparent.png") == 0).all()


def test_load_image_scales_16_bit(tmp_path):
    values = np.zeros((40, 40), np.uint16)
    values[:, 10:20], values[:, 20:] = 32768, 65535
    deep = Image.fromarray(values)
    assert deep.mode == "I;16"
    deep.save(tmp_path / "deep.png")
    rgb = media.load_image(tmp_path / "deep.png")
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 15].tolist() == [128] * 3
    assert rgb[0, 30].tolist() == [255] * 3


def _bad_images(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    Image.new("RGB", (20, 40)).save(tmp_path / "tiny.png")
    _cut(MEDIA / "single_face.jpg", tmp_path / "truncated.jpg", 20_000)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not a photo\n")
    return {
        "tiny": (tmp_path / "tiny.png", "20x40"),
        "truncated": (tmp_path / "truncated.jpg", "truncated"),
        "empty": (tmp_path / "empty.jpg", "empty"),
        "text": (tmp_path / "text.jpg", "not an image"),
        "missing": (tmp_path / "missing.jpg", "no such file"),
    }


@pytest.mark.parametrize("kind", ["tiny", "truncated", "empty", "text", "missing"])
def test_load_image_refuses_bad_files(tmp_path, kind):
    path, reason = _bad_images(tmp_path)[kind]
    with pytest.raises(BadMedia, match=reason) as info:
        media.load_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("side", [40, 100])  # above the limit (a warning in Pillow), above twice it
def test_load_image_refuses_decompression_bombs(tmp_path, monkeypatch, side):
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadMedia, match="too large"):
        media.load_image(tmp_path / "bomb.png")


def test_normalize_photos_keeps_good_and_explains_bad(tmp_path):
    bad = _bad_images(tmp_path)
    good = [MEDIA / "single_face.jpg", MEDIA / "multi_face.jpg"]
    paths = good + [bad["text"][0], bad["tiny"][0], MEDIA / "single_face.jpg"]
    kept, skipped = media.normalize_photos(paths, tmp_path / "out")
    assert [k["photo"] for k in kept] == [str(p) for p in good]
    for record, original in zip(kept, good):
        digest = storage.sha256_file(original)
        assert record["sha256"] == digest and record["file"] == f"p{digest[:16]}.jpg"
        assert Image.open(tmp_path / "out" / record["file"]).size == (record["width"], record["height"])
    reasons = {s["photo"]: s["reason"] for s in skipped}
    assert "not an image" in reasons[str(bad["text"][0])] and "20x40" in reasons[str(bad["tiny"][0])]
    assert "duplicate" in reasons[str(MEDIA / "single_face.jpg")]


def test_normalize_photos_retries_one_by_one_after_a_crash(tmp_path, monkeypatch):
    poison = str(MEDIA / "multi_face.jpg")

    def fake_run_isolated(fn, paths, out_dir, label=""):
        if poison in paths:  # the decoder "crashes" on this file, batch or alone
            raise IsolatedCrash(f"{label}: isolated child process was killed by SIGSEGV")
        return fn(paths, out_dir)

    monkeypatch.setattr(images, "run_isolated", fake_run_isolated)
    paths = [MEDIA / "single_face.jpg", Path(poison), MEDIA / "0-f1-su-ph.jpg"]
    kept, skipped = media.normalize_photos(paths, tmp_path)
    assert [k["photo"] for k in kept] == [str(paths[0]), str(paths[2])]
    assert skipped == [{"photo": poison, "reason": f"{poison}: isolated child process was killed by SIGSEGV"}]


def test_heic_photo_loads_upright(tmp_path):
    import pillow_heif

    pillow_heif.register_heif_opener()
    source = Image.open(MEDIA / "single_face.jpg").convert("RGB")
    source.save(tmp_path / "phone.heic")
    loaded = media.load_image(tmp_path / "phone.heic")
    assert loaded.shape == (source.height, source.width, 3)
    assert np.abs(loaded.astype(int) - np.asarray(source)).mean() < 8  # lossy HEVC, same picture
