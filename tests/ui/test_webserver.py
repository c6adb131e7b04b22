"""The real Dagster UI over a small built graph: the webserver on 127.0.0.1 with a temporary
DAGSTER_HOME, its GraphQL API (lineage edges, staleness, check outcomes) and headless Chromium
on the lineage and checks pages. Screenshots and page text land in test-artifacts/ui/.

Every process started here (the webserver with its code server, each Chromium) runs in its own
process group and is stopped by that group's id; the test ends by asserting none is left.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from swapline.build import build_assets, default_resources
from swapline.runner import plan, write_instance_yaml
from tests.conftest import CONSENT, REPO

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts" / "ui"
STAGES = ("source_media", "frames", "aligned_faces")  # partitioned by source; then <id>/faceset
CHROMIUM = shutil.which("chromium")


def small_project(media) -> dict:
    """Two people and a swap; only ben gets built (one short clip, 12 frames), so anna's
    assets and the swap's model are there to be MISSING."""
    return {
        "identities": {
            "anna": {"consent": CONSENT, "sources": [{"video": str(media / "WolfgangLanger_Pexels.mp4")}]},
            "ben": {"consent": CONSENT, "sources": [{"video": str(media / "single_face.mp4")}]},
        },
        "swaps": {"ab": {"a": "anna", "b": "ben", "resolution": 64, "preset": "lite", "iterations": 40, "batch_size": 8}},
        "extraction": {"sample_fps": 6, "face_size": 96, "max_frames": 12, "workers": 1},
        "checks": {"min_faces": 2},  # far below recommended: enough_faces WARNs, nothing blocks
    }


# -- processes -------------------------------------------------------------------------------

def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group led by proc (its pgid is its PID), then SIGKILL what is left."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    deadline = time.monotonic() + grace
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=grace)


@contextlib.contextmanager
def started(cmd: list[str], log: Path, started_groups: list[int], stdout: Path | None = None, **kwargs):
    """Popen in a new session (so a new process group); always stopped by its PID on exit.
    stderr goes to log, stdout too unless a file is given for it."""
    with open(log, "wb") as err, open(stdout or os.devnull, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out if stdout else err, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kwargs)
    started_groups.append(proc.pid)
    try:
        yield proc
    finally:
        _stop_group(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- webserver -------------------------------------------------------------------------------

def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.load(response)
    assert not body.get("errors"), body["errors"]
    return body["data"]


def wait_until_loaded(base: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """/server_info answers, then the code location is LOADED (its load error, if any, is shown)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"webserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"webserver not ready in {timeout}s:\n{log.read_text()[-3000:]}"
        try:
            urllib.request.urlopen(f"{base}/server_info", timeout=2).read()
            entries = graphql(base, """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
            (entry,) = entries["workspaceOrError"]["locationEntries"]
            if entry["loadStatus"] == "LOADED":
                assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)


# -- chromium --------------------------------------------------------------------------------

def page_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def render(url: str, name: str, expect: list[str], tmp: Path, started_groups: list[int]) -> str:
    """Load url in headless Chromium, save a screenshot and the page text under ARTIFACTS and
    return the text. The UI is a React app: Chromium runs it for a virtual-time budget (paused
    while requests are pending) before it dumps the DOM; a slow machine gets a second, longer go."""
    png = ARTIFACTS / f"{name}.png"
    for budget in (15_000, 45_000):
        profile = tmp / f"chromium-{name}-{budget}"
        cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
               "--disable-background-networking", "--disable-component-update",
               f"--user-data-dir={profile}", "--window-size=1600,1000", f"--virtual-time-budget={budget}",
               f"--screenshot={png}", "--dump-dom", url]
        dom, log = tmp / f"{name}-{budget}.html", tmp / f"chromium-{name}-{budget}.log"
        with started(cmd, log, started_groups, stdout=dom) as proc:
            try:
                proc.wait(timeout=budget / 1000 + 60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"chromium did not finish {url} in time:\n{log.read_text(errors='replace')[-2000:]}")
        assert proc.returncode == 0 and "</html>" in dom.read_text(errors="replace"), \
            f"chromium failed on {url} ({proc.returncode}):\n{log.read_text(errors='replace')[-2000:]}"
        text = page_text(dom.read_text(errors="replace"))
        (ARTIFACTS / f"{name}.txt").write_text(text + "\n")
        if all(word in text for word in expect):
            break
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, png
    return text


# -- the test --------------------------------------------------------------------------------

@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium; .ci/run does)")
def test_webserver_shows_lineage_staleness_and_checks(media_dir, swapline_home, tmp_path, monkeypatch, write_project):
    home = tmp_path / "dagster_home"
    write_instance_yaml(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    project, project_file = write_project(small_project(media_dir))
    monkeypatch.setenv("SWAPLINE_PROJECT", str(project_file))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.iterdir():
        old.unlink()

    # Build ben (source -> frames -> faces -> faceset, with its checks) into the shared SQLite instance.
    from swapline.assets.automation import sync_partitions

    with dg.DagsterInstance.get() as instance:
        sync_partitions(project, instance)
        assets = build_assets(project)
        for step in [s for s in plan(project) if s.keys[0].path[0] == "ben"]:
            assert dg.materialize(assets, selection=step.keys, partition_key=step.partition, instance=instance,
                                  resources=default_resources(), tags={"swapline/step": step.label}).success, step.label
    (ben_source,) = project.source_keys("ben")
    (anna_source,) = project.source_keys("anna")

    groups: list[int] = []
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    script = Path(sys.executable).with_name("dagster-webserver")  # the venv's; else the same module
    webserver = [str(script)] if script.is_file() else [sys.executable, "-m", "dagster_webserver"]
    log = tmp_path / "webserver.log"
    with started([*webserver, "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"], log, groups,
                 cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as server:
        wait_until_loaded(base, server, log)

        # (1) Lineage: exactly the edges the project implies, as the served API reports them.
        nodes = graphql(base, "{ assetNodes { assetKey { path } dependencyKeys { path } groupName } }")["assetNodes"]
        edges = {("/".join(d["path"]), "/".join(n["assetKey"]["path"])) for n in nodes for d in n["dependencyKeys"]}
        chain = (*STAGES, "faceset")
        expected = {(f"{who}/{a}", f"{who}/{b}") for who in ("anna", "ben") for a, b in zip(chain, chain[1:])}
        expected |= {(f"{who}/source_files", f"{who}/source_media") for who in ("anna", "ben")}  # observed sources
        expected |= {("anna/faceset", "ab/face_model"), ("ben/faceset", "ab/face_model")}
        assert edges == expected
        assert {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}["ben/faceset"] == "curate"

        # Staleness: what was built is FRESH (per source partition), the rest MISSING.
        fields = [f'{who}_{stage}: assetNodeOrError(assetKey: {{path: ["{who}", "{stage}"]}}) '
                  f'{{ ... on AssetNode {{ staleStatusByPartition(partitions: ["{part}"]) }} }}'
                  for who, part in (("anna", anna_source), ("ben", ben_source)) for stage in STAGES]
        fields += [f'{alias}: assetNodeOrError(assetKey: {{path: {json.dumps(key)}}}) {{ ... on AssetNode {{ staleStatus }} }}'
                   for alias, key in (("anna_faceset", ["anna", "faceset"]), ("ben_faceset", ["ben", "faceset"]),
                                      ("ab_face_model", ["ab", "face_model"]))]
        stale = graphql(base, "{ " + "\n".join(fields) + " }")
        status = {alias: node.get("staleStatus") or node["staleStatusByPartition"][0] for alias, node in stale.items()}
        assert status == {**{f"ben_{s}": "FRESH" for s in STAGES}, **{f"anna_{s}": "MISSING" for s in STAGES},
                          "ben_faceset": "FRESH", "anna_faceset": "MISSING", "ab_face_model": "MISSING"}

        # The faceset's checks ran with this materialization; enough_faces warns (9-ish faces < 300).
        checks = graphql(base, """{ assetNodeOrError(assetKey: {path: ["ben", "faceset"]}) { ... on AssetNode {
            assetChecksOrError { ... on AssetChecks { checks { name
              executionForLatestMaterialization { status evaluation { severity } } } } } } } }""")
        outcome = {c["name"]: c["executionForLatestMaterialization"]
                   for c in checks["assetNodeOrError"]["assetChecksOrError"]["checks"]}
        assert outcome["enough_faces"] == {"status": "FAILED", "evaluation": {"severity": "WARN"}}
        assert "SUCCEEDED" in {o["status"] for o in outcome.values()}

        # (2) The pages, as a person sees them (the first-visit newsletter dialog dismissed first).
        assert graphql(base, "mutation { setNuxSeen }")["setNuxSeen"] is True
        expanded = ",".join(f"global@global:{group}" for group in ("collect", "extract", "curate", "train"))
        text = render(f"{base}/asset-groups?{urllib.parse.urlencode({'expanded': expanded})}", "lineage",
                      ["face_model", "aligned_faces", "source_media"], tmp_path, groups)
        assert "Global asset lineage" in text
        for name in (*STAGES, "faceset"):  # a node for each person, then the swap's model
            assert len(re.findall(rf"\b{name}\b", text)) >= 2, (name, text[:2000])
        assert "face_model" in text, text[:2000]

        text = render(f"{base}/assets/ben/faceset?view=checks&checkDetail=enough_faces", "checks",
                      ["Evaluation result", "enough_faces"], tmp_path, groups)
        assert "ben / faceset" in text and f"Checks ({len(outcome)})" in text, text[:2000]
        words = {"SUCCEEDED": "Succeeded", "FAILED": "Failed"}
        for name, execution in outcome.items():  # the list shows each check with its latest status
            assert re.search(rf"\b{name}( {name})? {words[execution['status']]}\b", text), (name, text[:2000])
        assert "enough_faces Execute" in text and "Evaluation result Failed" in text, text[:2000]

    left = {pgid: _group_members(pgid) for pgid in groups}
    assert not any(left.values()), f"processes left running: {left}"
