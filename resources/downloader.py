"""Downloads URL sources with yt-dlp under the project's `downloads:` settings."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from swapline.ops.download import AlreadyDownloaded, Downloaded, DownloadSettings, download_url, remote_change


class Downloader(dg.ConfigurableResource):
    """yt-dlp with the limits an unattended pipeline needs. What to download and how patiently is
    the project's (`downloads:`, passed to each call); only where this machine keeps its per-host
    locks is configured here."""

    hosts_dir: str | None = Field(default=None, description="Folder of the per-host lock files that every process on "
                                  "this machine shares (default: <tmp>/swapline-hosts-<uid>).")

    def fetch(self, url: str, dest_dir: Path, settings: DownloadSettings, archive: Path | None = None) -> Downloaded:
        """Download into dest_dir, recording the video in `archive`. A video the archive already
        lists whose file we no longer hold (or whose file changed) is fetched again rather than failing."""
        try:
            return download_url(url, dest_dir, settings, archive=archive, gate_dir=self._gate())
        except AlreadyDownloaded:
            return download_url(url, dest_dir, settings, gate_dir=self._gate())

    def changed(self, url: str, recorded: dict[str, str] | None, settings: DownloadSettings) -> str | None:
        """What changed behind a directly downloaded URL since it was collected (None: nothing, or
        nothing can be told); one HEAD request, in the host's turn."""
        return remote_change(url, recorded, settings, gate_dir=self._gate())

    def _gate(self) -> Path | None:
        return Path(self.hosts_dir) if self.hosts_dir else None
