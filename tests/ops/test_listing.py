"""URL sources expand: an RSS feed and an HTML page with several videos list their entries flat
(real yt-dlp, a real server on 127.0.0.1, nothing downloaded), with stable identities, and the
selection a user asks for picks what it promises."""

from __future__ import annotations

import datetime as dt

import pytest

from swapline.ops.download_settings import DownloadSettings
from swapline.ops.listing import ListingError, Selection, list_url, select
from tests.feeds import feed_server, write_feed

ITEMS = [
    {"guid": "ep-1", "title": "Interview with Anna", "day": 2, "file": "a.mp4", "seconds": "00:01:30"},
    {"guid": "ep-2", "title": "Anna on stage", "day": 5, "file": "b.mp4", "seconds": "00:00:20"},
    {"guid": "ep-3", "title": "Trailer", "day": 9, "file": "c.mp4"},
]


def test_feed_lists_flat_with_stable_ids_and_nothing_downloaded(tmp_path):
    with feed_server(tmp_path) as (base, log, _):
        write_feed(tmp_path / "feed.xml", base, ITEMS)
        listing = list_url(f"{base}/feed.xml")
    assert not listing.single and [e.id for e in listing.entries] == ["rss:ep-1", "rss:ep-2", "rss:ep-3"]
    first = listing.entries[0]
    assert first.title == "Interview with Anna" and first.duration == 90 and first.source_url == f"{base}/feed.xml"
    assert dt.datetime.fromtimestamp(first.uploaded, dt.timezone.utc).date() == dt.date(2026, 11, 2)
    assert log == [("GET", "/feed.xml")]  # one request: the list, no video


def test_page_with_several_videos_expands_by_media_url(tmp_path):
    (tmp_path / "page.html").write_text('<html><body><video src="a.mp4"></video><video><source src="sub/b.mp4" type="video/mp4">'
                                        "</video></body></html>")
    with feed_server(tmp_path) as (base, _, _):
        listing = list_url(f"{base}/page.html")
    # A position on a page is no identity: the entries are their media URLs (reordering keeps them).
    assert [e.id for e in listing.entries] == [f"{base}/a.mp4", f"{base}/sub/b.mp4"]


def test_selection_picks_what_it_promises(tmp_path):
    with feed_server(tmp_path) as (base, _, _):
        write_feed(tmp_path / "feed.xml", base, ITEMS)
        entries = list_url(f"{base}/feed.xml").entries

    def ids(**selection):
        kept, dropped = select(entries, Selection(**selection))
        assert {e.id for e in kept}.isdisjoint(dropped) and len(kept) + len(dropped) == len(entries)
        return [e.id for e in kept], dropped

    assert ids(max_entries=2)[0] == ["rss:ep-2", "rss:ep-3"]  # the newest two
    assert ids(after=dt.date(2026, 11, 4))[0] == ["rss:ep-2", "rss:ep-3"]
    assert ids(min_duration=60)[0] == ["rss:ep-1", "rss:ep-3"]  # ep-3's length is unknown: kept
    assert ids(max_duration=60)[0] == ["rss:ep-2", "rss:ep-3"]
    kept, dropped = ids(title="anna")
    assert kept == ["rss:ep-1", "rss:ep-2"] and "title does not match" in dropped["rss:ep-3"]
    assert ids(exclude=["rss:ep-2"]) == (["rss:ep-1", "rss:ep-3"], {"rss:ep-2": "excluded"})
    with pytest.raises(ValueError, match="regular expression"):
        Selection(title="(unclosed")


@pytest.mark.parametrize("problem", ["404", "malformed"])
def test_a_broken_feed_is_a_clear_error(tmp_path, problem):
    with feed_server(tmp_path) as (base, _, broken):
        if problem == "404":
            broken["/feed.xml"] = 404
        else:
            (tmp_path / "feed.xml").write_text("<rss><channel><item><title>oops</channel>")
        with pytest.raises(ListingError, match="feed.xml: cannot be listed"):
            list_url(f"{base}/feed.xml", DownloadSettings(stall_timeout_seconds=5, retries=0, host_pause_seconds=0))
