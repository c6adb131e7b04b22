"""Code-location load time: what every run worker and step process pays before doing any work.

In fresh subprocesses, measured in the same run and interleaved (so load from other work on a
shared machine hits all alike), the median wall time of:

- `import dagster` alone (the floor: nothing swapline does can load faster);
- `import swapline.definitions` and building the definitions of the project file, resolving
  the asset graph and repository the way Dagster's loader does;
- `dagster definitions validate -m swapline.definitions` (the CLI loading the code location),
  next to the same command on an empty `Definitions()` (the CLI's own cost).

Each is reported in seconds and as a ratio to the bare import; the aim is under 3 s and
within 2x of `import dagster`. It also lists which heavy modules (torch, cv2, dlib,
great_expectations, av, pandas, pyarrow, ...) are in sys.modules after the definitions load,
and for each the swapline module whose import first pulled it in (from `python -X importtime`;
later routes to an already imported module are not seen).

    python -m benchmarks.load_time [--repeats 5] [--project demo/swapline.yaml]

Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "cv2", "dlib", "great_expectations", "av", "pandas", "pyarrow", "scipy", "sklearn", "skimage",
         "yt_dlp", "safetensors", "pytorch_msssim", "face_recognition_models", "imagehash", "pillow_heif")

BARE = "import dagster"
# Built and resolved as Dagster's loader does: call the @definitions function, then resolve the
# repository (asset graph, jobs, sensors, schedules). Prints the heavy modules it ended up with.
LOAD_DEFS = f"""
import json, sys
import dagster as dg
import swapline.definitions as location
defs = location.defs() if callable(location.defs) else location.defs
repo = defs.get_repository_def()
repo.asset_graph.get_all_asset_keys()
print(json.dumps({{"assets": len(repo.asset_graph.get_all_asset_keys()),
                  "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return took, done.stdout


def importers(env: dict) -> dict[str, dict]:
    """For each heavy top-level module imported while loading the definitions: its cumulative
    import time and the innermost swapline module on the import stack that first pulled it in."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", LOAD_DEFS], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"-X importtime load failed ({done.returncode}):\n{done.stderr[-3000:]}")
    # Lines (in completion order): "import time: self [us] | cumulative | <indent>name"; a module's
    # nested imports are printed before it, one level deeper. Rebuild each line's parent chain.
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((depth, name.strip(), int(cumulative)))
    found: dict[str, dict] = {}
    for i, (depth, name, cumulative) in enumerate(rows):
        if name not in HEAVY or name in found:
            continue
        # Ancestors are the later lines with smaller depth (each shallower level's first closer).
        chain, level = [], depth
        for parent_depth, parent, _ in rows[i + 1:]:
            if parent_depth < level:
                chain.append(parent)
                level = parent_depth
        by = next((p for p in chain if p.startswith("swapline")), chain[0] if chain else "<top level>")
        found[name] = {"cumulative_s": round(cumulative / 1e6, 3), "imported_by": by, "chain": chain[:6]}
    return found


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--project", type=Path, default=REPO / "demo" / "swapline.yaml")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="swapline-load-") as tmp:
        env = {**os.environ, "SWAPLINE_PROJECT": str(args.project.resolve()), "SWAPLINE_HOME": str(Path(tmp) / "home"),
               "DAGSTER_HOME": tmp}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        empty = Path(tmp) / "empty_definitions.py"
        empty.write_text("import dagster as dg\n\ndefs = dg.Definitions()\n")
        commands = {
            "import_dagster": [sys.executable, "-c", BARE],
            "load_definitions": [sys.executable, "-c", LOAD_DEFS],
            "dagster_cli_validate": [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "swapline.definitions"],
            # The same CLI on an empty code location: what the CLI itself costs over `import dagster`.
            "dagster_cli_validate_empty": [sys.executable, "-m", "dagster", "definitions", "validate", "-f", str(empty)],
        }
        print(f"project {args.project}; {args.repeats} fresh subprocesses each, interleaved; python {sys.version.split()[0]}")
        for cmd in commands.values():  # warm the file cache and .pyc files once, not counted
            timed(cmd, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        loaded = {}
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                took, out = timed(cmd, env)
                times[name].append(took)
                if name == "load_definitions":
                    loaded = json.loads(out.strip().splitlines()[-1])
        heavy = importers(env)

    median = {name: statistics.median(values) for name, values in times.items()}
    bare = median["import_dagster"]
    result = {
        "python": sys.version.split()[0], "repeats": args.repeats, "project": str(args.project), "assets": loaded["assets"],
        "median_s": {name: round(value, 3) for name, value in median.items()},
        "all_s": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "ratio_to_import_dagster": {name: round(value / bare, 2) for name, value in median.items() if name != "import_dagster"},
        "cli_swapline_over_empty_s": round(median["dagster_cli_validate"] - median["dagster_cli_validate_empty"], 3),
        "heavy_modules_at_load": loaded["heavy"],
        "heavy_importers": heavy,
    }
    result["aims"] = {  # the CLI's own overhead is not ours: the 2x aim is on the load itself
        "load_definitions_under_3s": median["load_definitions"] < 3.0,
        "cli_validate_under_3s": median["dagster_cli_validate"] < 3.0,
        "load_definitions_within_2x_of_import_dagster": median["load_definitions"] <= 2 * bare,
    }
    for name, value in median.items():
        ratio = "" if name == "import_dagster" else f" = {value / bare:.2f} x import dagster"
        print(f"{name:26s} median {value:.2f} s{ratio}  (runs: {', '.join(f'{v:.2f}' for v in times[name])})")
    print(f"definitions: {loaded['assets']} assets; the CLI loading swapline takes "
          f"{result['cli_swapline_over_empty_s']:.2f} s more than the CLI on empty definitions")
    if heavy:
        for name, info in heavy.items():
            print(f"heavy module at definitions load: {name} ({info['cumulative_s']:.2f} s) imported by {info['imported_by']}")
    else:
        print("no heavy module imported at definitions load")
    print("aims: " + "; ".join(f"{aim} {'met' if ok else 'MISSED'}" for aim, ok in result["aims"].items()))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
