"""ops.download against a local HTTP server (no internet), as yt-dlp's own tests do."""

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


FAST = DownloadSettings(retries=1, fragment_retries=1, socket_timeout=5)


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
    settings = DownloadSettings(retries=1, fragment_retries=1, socket_timeout=5, max_bytes=50_000)
    with pytest.raises(DownloadError, match="larger than the limit of 50000 bytes") as info:
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
    settings = DownloadSettings(retries=1, fragment_retries=1, socket_timeout=5, archive=tmp_path / "archive.txt")
    first = download_url(f"{server}/single_face.mp4", tmp_path / "videos", settings)
    assert first.path.is_file() and (tmp_path / "archive.txt").read_text().strip()
    with pytest.raises(AlreadyDownloaded, match="archive"):
        download_url(f"{server}/single_face.mp4", tmp_path / "videos", settings)
