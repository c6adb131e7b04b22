"""A local feed server for the collection tests: RSS 2.0 items and HTML pages pointing at demo
clips on the same server, with a log of every request (to prove what is and is not fetched)."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import http.server
import shutil
import sys
import threading
from contextlib import contextmanager
from pathlib import Path


class _Logged(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, log: list, broken: dict, **kwargs):
        self.requests, self.broken = log, broken
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.requests.append(("GET", self.path))
        if self.broken.get(self.path) == 404:
            self.send_error(404)
            return
        super().do_GET()

    def do_HEAD(self):  # noqa: N802
        self.requests.append(("HEAD", self.path))
        super().do_HEAD()

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # yt-dlp's generic extractor reads the start of a file, then hangs up: not an error.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@contextmanager
def feed_server(root: Path):
    """Serve `root` on 127.0.0.1; yields (base URL, request log list, {path: 404} to break paths)."""
    log, broken = [], {}
    server = _Server(("127.0.0.1", 0), functools.partial(_Logged, directory=str(root), log=log, broken=broken))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log, broken
    finally:
        server.shutdown()
        server.server_close()


def write_feed(path: Path, base: str, items: list[dict]) -> None:
    """RSS 2.0 with one <item> per dict: guid, title, day (of Nov 2026), file, seconds (optional)."""
    rows = []
    for item in items:
        date = email.utils.format_datetime(dt.datetime(2026, 11, item["day"], 10, tzinfo=dt.timezone.utc))
        duration = f"<itunes:duration>{item['seconds']}</itunes:duration>" if "seconds" in item else ""
        rows.append(f"<item><title>{item['title']}</title><guid>{item['guid']}</guid><pubDate>{date}</pubDate>{duration}"
                    f'<enclosure url="{base}/{item["file"]}" type="video/mp4" length="1000"/></item>')
    path.write_text('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">'
                    f"<channel><title>Show</title><link>{base}/</link><description>test</description>{''.join(rows)}</channel></rss>")


def clips(media: Path, root: Path, names: dict[str, str]) -> None:
    """Copy demo clips into the served folder under new names ({served name: demo file})."""
    for served, demo in names.items():
        shutil.copy(media / demo, root / served)
