"""ops.download against a local HTTP server (no internet), as yt-dlp's own tests do."""

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from swapline.ops import storage
from swapline.ops.download import (
    AlreadyDownloaded,
    DownloadError,
    DownloadSettings,
    download_url,
)

MEDIA = Path(__file__).resolve().parents[2] / "demo" / "media"
CLIP = MEDIA / "single_face.mp4"


class _Handler(BaseHTTPRequestHandler):
    """Serves demo/media files with Range support; under /nolength/ without a
    Content-Length (the body ends when the connection closes)."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        no_length = self.path.startswith("/nolength/")
        path = MEDIA / self.path.rsplit("/", 1)[-1]
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and not no_length:
            start = int(match[1] or 0)
            end = min(int(match[2]), end) if match[2] else end
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        if no_length:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])

    def log_message(self, *args):  # keep pytest output clean
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # The byte-cap tests hang up mid-body on purpose: a reset connection is expected here.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


FAST = DownloadSettings(retries=1, fragment_retries=1, stall_timeout_seconds=5, host_pause_seconds=0)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


def test_download_through_the_generic_extractor(server, tmp_path):
    got = download_url(f"{server}/single_face.mp4", tmp_path, FAST)
    assert got.path.parent == tmp_path and got.path.is_file()
    assert got.sha256 == storage.sha256_file(CLIP) and got.bytes == CLIP.stat().st_size
    assert got.info["extractor"] == "generic" and got.info["ext"] == "mp4"
    assert got.info["webpage_url"].endswith("/single_face.mp4")
    assert _leftovers(tmp_path) == [got.path.name]  # the temp folder is gone


@pytest.mark.parametrize("route", ["", "/nolength"])
def test_byte_cap_aborts_and_leaves_nothing(server, tmp_path, route):
    settings = FAST.model_copy(update={"max_download_mb": 0.05})  # 52428 bytes; the clip has 208428
    with pytest.raises(DownloadError, match="larger than the limit of 0.05 MiB") as info:
        download_url(f"{server}{route}/single_face.mp4", tmp_path, settings)
    assert "single_face.mp4" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_file_urls_are_refused(tmp_path):
    with pytest.raises(DownloadError, match="file:// URLs are refused"):
        download_url(CLIP.as_uri(), tmp_path, FAST)
    with pytest.raises(DownloadError, match="only http"):
        download_url("ftp://127.0.0.1/clip.mp4", tmp_path, FAST)


def test_missing_page_fails_quickly(server, tmp_path):
    started = time.monotonic()
    with pytest.raises(DownloadError, match="404") as info:
        download_url(f"{server}/nothing_here.mp4", tmp_path, FAST)
    assert time.monotonic() - started < 10
    assert "nothing_here.mp4" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_archive_skips_a_second_download(server, tmp_path):
    first = download_url(f"{server}/single_face.mp4", tmp_path / "videos", FAST, archive=tmp_path / "archive.txt")
    assert first.path.is_file() and (tmp_path / "archive.txt").read_text().strip()
    with pytest.raises(AlreadyDownloaded, match="archive"):
        download_url(f"{server}/single_face.mp4", tmp_path / "videos", FAST, archive=tmp_path / "archive.txt")


class _Awkward(BaseHTTPRequestHandler):
    """The servers a new user meets: under /big/ one declaring 2 GiB (/big-nohead/: refusing HEAD,
    so only the GET declares it; /page/: a page whose schema.org VideoObject declares it), under
    /stall/ one that sends headers and a little then stalls, under /silent/ one that never
    answers. Every request is logged as (method, path)."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        self.server.requests.append((self.command, self.path))
        if self.path.startswith("/silent/"):
            self.server.release.wait(30)
            return
        if self.path.startswith("/big-nohead/") and not body:
            self.send_error(405)
            return
        if self.path.startswith("/page/"):
            self._page(body)
            return
        big = self.path.startswith("/big")
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", "2147483648" if big else "100000")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        if body:
            self.wfile.write(b"\0" * 4096)
            self.wfile.flush()
            if not big:
                self.server.release.wait(30)

    def _page(self, body: bool) -> None:
        video = {"@context": "https://schema.org", "@type": "VideoObject", "name": "clip", "contentUrl": f"http://{self.headers['Host']}/media/clip.mp4",
                 "encodingFormat": "video/mp4", "contentSize": "2147483648"}
        page = f'<html><head><script type="application/ld+json">{json.dumps(video)}</script></head><body></body></html>'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if body:
            self.wfile.write(page)

    def log_message(self, *args):
        pass


@pytest.fixture
def awkward():
    """Two awkward servers: 127.0.0.1 on two ports, two hosts to the per-host gate."""
    servers = []
    for _ in range(2):
        httpd = _Server(("127.0.0.1", 0), _Awkward)
        httpd.daemon_threads, httpd.requests, httpd.release = True, [], threading.Event()
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
    yield [(f"http://127.0.0.1:{s.server_address[1]}", s.requests) for s in servers]
    for httpd in servers:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()


CAP_100MB = DownloadSettings(max_download_mb=100, retries=1, stall_timeout_seconds=5, host_pause_seconds=0)


def test_declared_size_over_the_cap_is_refused_before_anything_is_fetched(awkward, tmp_path):
    base, requests = awkward[0]
    with pytest.raises(DownloadError, match=r"limit of 100 MiB.*2147483648 bytes declared, nothing downloaded"):
        download_url(f"{base}/big/clip.mp4", tmp_path / "dest", CAP_100MB, gate_dir=tmp_path / "hosts")
    assert requests == [("HEAD", "/big/clip.mp4")]  # no GET at all
    assert not (tmp_path / "dest").exists()


def test_size_an_extractor_declares_is_refused_before_the_media_is_requested(awkward, tmp_path):
    base, requests = awkward[0]
    with pytest.raises(DownloadError, match="2147483648 bytes declared, nothing downloaded"):
        download_url(f"{base}/page/watch", tmp_path / "dest", CAP_100MB, gate_dir=tmp_path / "hosts")
    assert not [path for _, path in requests if path.startswith("/media/")]
    assert _leftovers(tmp_path / "dest") == []


def test_declared_size_in_the_get_alone_stops_at_the_first_block(awkward, tmp_path):
    base, requests = awkward[0]
    with pytest.raises(DownloadError, match="larger than the limit of 100 MiB"):
        download_url(f"{base}/big-nohead/clip.mp4", tmp_path / "dest", CAP_100MB, gate_dir=tmp_path / "hosts")
    assert [m for m, _ in requests].count("GET") == 2  # yt-dlp's look at the URL, then the download it stopped
    assert _leftovers(tmp_path / "dest") == []  # the temp folder with the first block is gone


STALL = DownloadSettings(stall_timeout_seconds=1, retries=1, host_pause_seconds=0)
BILL = (STALL.retries + 1) * STALL.stall_timeout_seconds  # what a stall costs: 2 s


def _download_timed(url: str, dest: Path, gates: Path) -> float:
    started = time.monotonic()
    with pytest.raises(DownloadError):
        download_url(url, dest, STALL, gate_dir=gates)
    return time.monotonic() - started


def test_stalled_download_fails_within_retries_times_timeout(awkward, tmp_path):
    base, requests = awkward[0]
    took = _download_timed(f"{base}/stall/clip.mp4", tmp_path / "dest", tmp_path / "hosts")
    assert BILL <= took < BILL + 1.5, took  # every try waited out its timeout, and no more
    assert [m for m, _ in requests].count("GET") == 1 + STALL.retries + 1  # yt-dlp's look, then each try
    assert _leftovers(tmp_path / "dest") == []


def test_silent_server_fails_after_one_timeout(awkward, tmp_path):
    base, requests = awkward[0]
    with pytest.raises(DownloadError, match="no answer within 1 s"):
        download_url(f"{base}/silent/clip.mp4", tmp_path / "dest", STALL, gate_dir=tmp_path / "hosts")
    assert requests == [("HEAD", "/silent/clip.mp4")]


def _in_parallel(urls: list[str], tmp_path: Path) -> float:
    started = time.monotonic()
    threads = [threading.Thread(target=_download_timed, args=(url, tmp_path / f"dest{i}", tmp_path / "hosts"))
               for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def test_stalled_hosts_in_parallel_do_not_add_up_but_one_host_takes_turns(awkward, tmp_path):
    (one, _), (two, _) = awkward
    two_hosts = _in_parallel([f"{one}/stall/a.mp4", f"{two}/stall/b.mp4"], tmp_path)
    assert two_hosts < BILL + 1.5, two_hosts
    same_host = _in_parallel([f"{one}/stall/a.mp4", f"{one}/stall/b.mp4"], tmp_path)
    assert same_host >= 2 * BILL, same_host  # one request at a time per host


def test_loaded_modules_answer_unknown_attributes_with_attribute_error():
    """pickle finds a module-less object by asking every loaded module for it, catching only
    AttributeError; torch.compile's inductor pickles such objects. yt-dlp without pycryptodomex
    left a module answering ModuleNotFoundError, and training with compile failed on an H200."""
    import sys

    import swapline.ops.download  # noqa: F401
    import swapline.ops.listing  # noqa: F401

    for name, module in list(sys.modules.items()):
        if module is None:
            continue
        try:
            getattr(module, "swapline_no_such_attribute")
        except AttributeError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point: nothing else may come out
            raise AssertionError(f"module {name} answers an unknown attribute with {exc!r}") from exc
