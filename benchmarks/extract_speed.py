"""Extraction speed: the whole extract stage on a demo clip against a plain decode of it.

The stage runs through the ops the assets call (collect, sample_source into the artifact
store, extract_faces with the face cache and the worker pool, write_faces), starting from an
empty store each time, and is reported in SOURCE frames per second next to a single-process
PyAV decode of the same clip measured in the same run. The best of `--repeats` runs counts
(the least disturbed by other load on a shared machine); a per-frame breakdown of what
costs what follows.

    python -m benchmarks.extract_speed [--clip PATH] [--sample-fps 20] [--workers 2] [--repeats 2]

Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "demo" / "media" / "WolfgangLanger_Pexels.mp4"


def plain_decode(clip: Path) -> tuple[float, int]:
    """Seconds to decode every frame to RGB in this process, as any PyAV user would."""
    import av

    start = time.perf_counter()
    with av.open(str(clip)) as container:
        count = sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24") is not None)
    return time.perf_counter() - start, count


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def extract_stage(clip: Path, extraction, home: Path) -> dict:
    """frames then aligned_faces for one video, as the two assets do them; seconds per part."""
    from swapline.ops.collect import collect_video
    from swapline.ops.extract import extract_faces, sample_source
    from swapline.ops.facecache import CACHE_DIR, FaceCache
    from swapline.ops.facetable import write_faces
    from swapline.ops.storage import ArtifactStore, write_manifest
    from swapline.resources.analyzer import FaceAnalyzerResource

    store = ArtifactStore(home)
    cpu, start = _cpu_seconds(), time.perf_counter()
    source = collect_video(clip)
    manifest: dict = {}

    def build_frames(tmp: Path) -> None:
        manifest.update(sample_source(source, clip.parent, tmp, sample_fps=extraction.sample_fps,
                                      skip_similar=extraction.skip_similar, max_frames=extraction.max_frames))
        write_manifest(tmp, manifest)

    frames = store.publish(store.location("bench", "frames", "clip"), build_frames)
    sampled = time.perf_counter()
    analyzer = FaceAnalyzerResource().analyzer(extraction)
    cache = FaceCache(store.location(CACHE_DIR), analyzer, None, extraction.identity_distance)
    records, stats = extract_faces(frames.path, manifest, analyzer, identity="bench", source="clip", reference=None,
                                   max_distance=extraction.identity_distance, cache=cache, workers=extraction.workers)
    analysed = time.perf_counter()
    store.publish(store.location("bench", "aligned_faces", "clip"),
                  lambda tmp: (write_faces(tmp / "faces.parquet", records), write_manifest(tmp, {"stats": stats})))
    end = time.perf_counter()
    return {"seconds": end - start, "sample_s": sampled - start, "extract_s": analysed - sampled,
            "write_s": end - analysed, "cpu_s": _cpu_seconds() - cpu, "decoded": manifest["decoded"],
            "sampled": len(manifest["frames"]), "faces": stats["faces"], "workers": stats["workers"],
            "frames_dir": frames.path, "manifest": manifest}


def breakdown(frames_dir: Path, manifest: dict, extraction, clip: Path, count: int = 40) -> dict[str, float]:
    """Milliseconds per frame of each part, measured in this process on `count` sampled frames."""
    import av

    from swapline.ops import facecache, faces, facetable
    from swapline.ops.images import encode_jpeg, load_image
    from swapline.resources.analyzer import FaceAnalyzerResource

    analyzer = FaceAnalyzerResource().analyzer(extraction)
    entries = manifest["frames"][:count]
    images = [load_image(frames_dir / e["file"]) for e in entries]
    analyzer.detect(images[0])  # models loaded before timing
    timings: dict[str, float] = {}

    def timed(name: str, fn) -> list:
        start = time.perf_counter()
        out = [fn(i) for i in range(len(entries))]
        timings[name] = (time.perf_counter() - start) / len(entries) * 1000
        return out

    with av.open(str(clip)) as container:
        start = time.perf_counter()
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")
        timings["decode_rgb"] = (time.perf_counter() - start) / manifest["decoded"] * 1000
    timed("jpeg_encode", lambda i: encode_jpeg(images[i]))
    timed("jpeg_load", lambda i: load_image(frames_dir / entries[i]["file"]))
    boxes = timed("hog_detect", lambda i: analyzer._boxes(images[i]))
    found = timed("detect_with_landmarks", lambda i: analyzer.detect(images[i]))
    timings["landmarks"] = timings["detect_with_landmarks"] - timings["hog_detect"]
    del timings["detect_with_landmarks"], boxes
    records = timed("align_and_measure", lambda i: [
        facetable.make_record(images[i], face, analyzer=analyzer, identity="b", source="s", source_sha=entries[i]["sha256"],
                              frame_index=entries[i]["index"], face_index=k, timestamp=0.0)
        for k, face in enumerate(found[i])])
    pngs = timed("png_encode", lambda i: [facetable.encode_png(r.image) for r in records[i]])
    for rs, ps in zip(records, pngs):
        for record, png in zip(rs, ps):
            record.image = png
    with tempfile.TemporaryDirectory() as tmp:
        cache = facecache.FaceCache(Path(tmp), analyzer, None, 0.6)
        timed("cache_write", lambda i: cache.put(entries[i]["sha256"], records[i], list(range(len(records[i]))),
                                                 {"detected": len(records[i])}))
        timed("cache_read", lambda i: cache.get(entries[i]["sha256"]))
    del faces
    return {name: round(ms, 3) for name, ms in timings.items()}


def peak_rss_mb() -> dict[str, float]:
    """High-water marks so far: this process, and its largest child (getrusage keeps the max
    of the children, not their sum: two workers alive together count once)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "largest_child": round(children, 1), "self_plus_children": round(own + children, 1)}


class TreeRss:
    """Samples the summed RSS of this process and all its descendants (Linux /proc) every
    50 ms while running: the true peak when several workers are alive at once."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, self._sample())

    @staticmethod
    def _sample() -> float:
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                parents[int(entry.name)] = int(fields[1])
                rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):
                continue  # a process that ended meanwhile
        tree, grew = {os.getpid()}, True
        while grew:
            found = {pid for pid, parent in parents.items() if parent in tree} - tree
            tree |= found
            grew = bool(found)
        return sum(rss.get(pid, 0) for pid in tree) / 2**20


def main(argv: list[str] | None = None) -> dict:
    from swapline.project import Extraction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--sample-fps", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=Extraction().workers, help="extraction.workers (0: all cores)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-serial", action="store_true", help="skip the workers=1 comparison")
    args = parser.parse_args(argv)
    extraction = Extraction(backend="dlib", sample_fps=args.sample_fps, workers=args.workers)
    print(f"clip {args.clip.name}; sample_fps {args.sample_fps}; workers {args.workers}; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")

    decode_s = min(plain_decode(args.clip)[0] for _ in range(3))
    variants = [("parallel", extraction)] + ([] if args.no_serial else [("serial", extraction.model_copy(update={"workers": 1}))])
    runs: dict[str, dict] = {}
    tree_peak, rusage_peak = 0.0, None
    with tempfile.TemporaryDirectory(prefix="swapline-bench-") as tmp:
        for repeat in range(args.repeats):
            for name, settings in variants:
                with TreeRss() as sampler:
                    run = extract_stage(args.clip, settings, Path(tmp) / f"{name}-{repeat}")
                if name == "parallel":
                    tree_peak = max(tree_peak, sampler.peak_mb)
                    # Before the in-process variant and the breakdown load anything here.
                    rusage_peak = rusage_peak or peak_rss_mb()
                print(f"  {name} run {repeat + 1}: {run['seconds']:.2f} s (sample {run['sample_s']:.2f}, "
                      f"extract {run['extract_s']:.2f}, write {run['write_s']:.2f}; {run['cpu_s']:.1f} CPU s, "
                      f"{run['workers']} worker(s))")
                if name not in runs or run["seconds"] < runs[name]["seconds"]:
                    runs[name] = run
        decode_s = min(decode_s, *(plain_decode(args.clip)[0] for _ in range(3)))
        best = runs["parallel"]
        parts = breakdown(best["frames_dir"], best["manifest"], extraction, args.clip)

    frames = best["decoded"]
    decode_fps = frames / decode_s
    result = {
        "clip": args.clip.name, "source_frames": frames, "sampled_frames": best["sampled"], "faces": best["faces"],
        "sample_fps": args.sample_fps, "workers": best["workers"], "cores": os.cpu_count(),
        "plain_decode_fps": round(decode_fps, 1),
        "extract_stage_fps": round(frames / best["seconds"], 1),
        "ratio": round(frames / best["seconds"] / decode_fps, 3),
        "stage_seconds": {k: round(best[k], 3) for k in ("seconds", "sample_s", "extract_s", "write_s", "cpu_s")},
        "per_frame_ms": parts,
        "peak_rss_mb": {**rusage_peak, "process_tree_sampled": round(tree_peak, 1)},
    }
    if "serial" in runs:
        serial = runs["serial"]
        result["serial_extract_stage_fps"] = round(frames / serial["seconds"], 1)
        result["parallel_speedup_extract"] = round(serial["extract_s"] / best["extract_s"], 2)
    print(f"plain PyAV decode: {decode_fps:.0f} frames/s")
    print(f"extract stage ({best['workers']} workers): {result['extract_stage_fps']:.0f} source frames/s "
          f"= {result['ratio']:.2f} x decode")
    if "serial" in runs:
        print(f"extract stage (in-process): {result['serial_extract_stage_fps']:.0f} source frames/s; "
              f"detection {result['parallel_speedup_extract']:.2f}x faster with the pool")
    print("per sampled frame (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    print(f"peak RSS of the parallel stage: {rusage_peak['self_plus_children']:.0f} MB (self + largest child, "
          f"getrusage); {tree_peak:.0f} MB summed over the live process tree (sampled)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":  # the guard matters: extraction workers are spawned and re-import __main__
    main()
