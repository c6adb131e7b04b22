"""`swapline` command line: run a project, validate it, report on its data, show and refresh what is
stale, prepare a Dagster home, reclaim disk from old artifact versions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from swapline.project import PROJECT_ENV, ProjectError, load_project, project_path

REPO_DEFAULT_HOME = ".swapline"


def _home_defaults() -> None:
    """Artifacts and the Dagster instance live in the working folder unless told otherwise."""
    os.environ.setdefault("SWAPLINE_HOME", str(Path.cwd() / REPO_DEFAULT_HOME))
    os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home"))


def _env_defaults(project_file: Path) -> None:
    _home_defaults()
    os.environ[PROJECT_ENV] = str(project_file)


def cmd_check(args) -> int:
    from swapline.references import check_reference_photos

    project = load_project(args.project)
    check_reference_photos(project, project_path(args.project))  # one face each: found now, not mid-run
    for identity, ident in project.identities.items():
        why = ident.consent.lapsed()
        print(f"{identity}: {len(ident.sources)} source(s), consent by {ident.consent.given_by} ({ident.consent.date})"
              + (f", {len(ident.reference_photos)} reference photo(s) of one face each" if ident.reference_photos else "")
              + (f": {why.upper()}, not trained or converted" if why else ""))
    print(f"{len(project.swaps)} swap(s), {len(project.conversions)} conversion(s): OK")
    return 0


def cmd_init_home(args) -> int:
    from swapline.runner import write_instance_yaml

    home = Path(os.environ.get("DAGSTER_HOME", ".dagster_home")).resolve()
    write_instance_yaml(home)
    print(f"DAGSTER_HOME={home}")
    return 0


def _supervised(command: str, path: Path, *extra: str) -> int | None:
    """In the terminal's process: run this command in a supervised child (swapline/supervise.py)
    and return its status. In that child: None, and the command goes on here."""
    from swapline import supervise
    from swapline.runner import write_instance_yaml

    write_instance_yaml(Path(os.environ["DAGSTER_HOME"]).resolve())
    logging.getLogger("dagster").setLevel(logging.WARNING)
    if not supervise.is_child():
        return supervise.supervise([command, "--project", str(path), *extra])
    supervise.watch_parent()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    return None


def _closing_lines(summary) -> None:
    for line in summary.report:  # warnings, per source, per asset (swapline/summary.py)
        print(line)
    if summary.failed and summary.log_file is not None:
        print(f"== what went wrong, in full: {summary.log_file}")


def cmd_run(args) -> int:
    path = project_path(args.project)
    project = load_project(path)  # user mistakes surface here, before anything runs
    _env_defaults(path)
    if (status := _supervised("run", path)) is not None:
        return status
    import dagster as dg

    from swapline.runner import materialize_project, new_log_file

    home = Path(os.environ["DAGSTER_HOME"]).resolve()
    print(f"== materializing {path.name}: artifacts in {os.environ['SWAPLINE_HOME']}, Dagster home {home}", flush=True)
    with dg.DagsterInstance.get() as instance:
        summary = materialize_project(project, instance, echo=lambda line: print(line, flush=True),
                                      log_level="CRITICAL", log_file=new_log_file(home, "run"))
    print(f"== done in {summary.seconds:.0f}s: {len(summary.succeeded)} steps ok, {len(summary.failed)} failed")
    _closing_lines(summary)
    from swapline.ops.storage import ArtifactStore

    store = ArtifactStore(os.environ["SWAPLINE_HOME"])
    for name in project.conversions:
        if published := store.current_or_none(store.location(name, "converted_video")):
            print(f"converted video: {published.path / f'{name}.mp4'}")
            print(f"provenance:      {published.path / f'{name}.provenance.json'}")
    print("see the lineage: ./dev ui   (then open http://127.0.0.1:3000)")
    return 0 if summary.ok else 1


def cmd_report(args) -> int:
    path = project_path(args.project)
    project = load_project(path)
    _env_defaults(path)
    import dagster as dg

    from swapline.ops.storage import ArtifactStore
    from swapline.report import report_lines

    with dg.DagsterInstance.get() as instance:
        for line in report_lines(project, instance, ArtifactStore(os.environ["SWAPLINE_HOME"])):
            print(line)
    return 0


def cmd_status(args) -> int:
    """What is stale, missing or failed, per asset and partition, as Dagster judges it, after a
    look at the sources' files and at runs that died (swapline/status.py)."""
    path = project_path(args.project)
    project = load_project(path)
    _env_defaults(path)
    import dagster as dg

    from swapline.runner import write_instance_yaml
    from swapline.status import look_around, project_status, status_lines

    write_instance_yaml(Path(os.environ["DAGSTER_HOME"]).resolve())
    with dg.DagsterInstance.get() as instance:
        for line in look_around(project, instance) + status_lines(project_status(project, instance), show_all=args.all):
            print(line)
    return 0


def cmd_refresh(args) -> int:
    """Materialize exactly what is stale, missing or failed, in rounds of Dagster runs that ask
    again after each (Dagster's CLI has no "stale only" selection); --dry-run prints what would run."""
    path = project_path(args.project)
    project = load_project(path)
    _env_defaults(path)
    import dagster as dg

    from swapline.runner import new_log_file, write_instance_yaml
    from swapline.status import dry_run_lines, look_around, refresh

    if args.dry_run:
        write_instance_yaml(Path(os.environ["DAGSTER_HOME"]).resolve())
        with dg.DagsterInstance.get() as instance:
            for line in look_around(project, instance) + dry_run_lines(project, instance):
                print(line)
        return 0
    if (status := _supervised("refresh", path)) is not None:
        return status
    home = Path(os.environ["DAGSTER_HOME"]).resolve()
    with dg.DagsterInstance.get() as instance:
        summary = refresh(project, instance, echo=lambda line: print(line, flush=True), log_level="CRITICAL",
                          log_file=new_log_file(home, "refresh"))
    if not summary.succeeded and not summary.failed:
        print("== nothing was stale, missing or failed")
    else:
        print(f"== refreshed in {summary.seconds:.0f}s: {len(summary.succeeded)} ok, {len(summary.failed)} failed")
    _closing_lines(summary)
    return 0 if summary.ok else 1


def cmd_collect(args) -> int:
    """List every URL source (channels, playlists, feeds, pages expand), register what is new,
    download and extract only that (swapline/collection.py)."""
    path = project_path(args.project)
    project = load_project(path)
    if args.identity and args.identity not in project.identities:
        print(f"error: no identity {args.identity!r} in {path} (known: {', '.join(project.identities)})", file=sys.stderr)
        return 2
    _env_defaults(path)
    if (status := _supervised("collect", path, *(["--identity", args.identity] if args.identity else []))) is not None:
        return status
    import dagster as dg

    from swapline.collection import collect
    from swapline.runner import new_log_file

    home = Path(os.environ["DAGSTER_HOME"]).resolve()
    with dg.DagsterInstance.get() as instance:
        summary = collect(project, instance, Path(os.environ["SWAPLINE_HOME"]), [args.identity] if args.identity else None,
                          echo=lambda line: print(line, flush=True), log_level="CRITICAL", log_file=new_log_file(home, "collect"))
    print(f"== collected in {summary.seconds:.0f}s: {len(summary.succeeded)} ok, {len(summary.failed)} failed")
    _closing_lines(summary)
    return 0 if summary.ok else 1


def cmd_evaluate(args) -> int:
    """Held-out metrics of a swap's published model (ops/evaluate.py); PNGs only with --out."""
    import json

    from swapline.ops.evaluate import evaluate
    from swapline.ops.faces import FaceAnalyzer
    from swapline.ops.storage import ArtifactStore, MissingArtifact

    path = project_path(args.project)
    project = load_project(path)
    _env_defaults(path)
    if args.swap not in project.swaps:
        print(f"error: no swap {args.swap!r} in {path.name} (swaps: {', '.join(project.swaps) or 'none'})", file=sys.stderr)
        return 2
    swap = project.swaps[args.swap]
    store = ArtifactStore(os.environ["SWAPLINE_HOME"])
    try:
        checkpoint = store.current(store.location(args.swap, "face_model")).path / "checkpoint"
        facesets = [store.current(store.location(name, "faceset")).path / "faceset.parquet" for name in (swap.a, swap.b)]
    except MissingArtifact as exc:
        print(f"error: {exc} (run `swapline run` first)", file=sys.stderr)
        return 1
    result = evaluate(checkpoint, facesets[0], facesets[1], FaceAnalyzer(), args.device)
    images = result.pop("images")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in images.items():
            (out / name).write_bytes(data)
        print(f"pictures: {', '.join(str(out / name) for name in images)}")
    rec, ident = result["reconstruction"], result["identity"]
    print(f"swap {args.swap} ({swap.a} <-> {swap.b}), step {result['step']}, held out {result['held_out']['a']} + {result['held_out']['b']} faces")
    for key, m in rec.items():
        print(f"  reconstruction {key}: L1 {m['l1']:.4f}  SSIM {m['ssim']:.3f}  PSNR {m['psnr']:.1f} dB")
    print(f"  identity: A->B nearer B {ident['a_to_b']:.0%}, B->A nearer A {ident['b_to_a']:.0%} "
          f"(control: A->A {ident['a_to_a']:.0%}, B->B {ident['b_to_b']:.0%}; chance 50%)")
    for key, m in result["pose"].items():
        print(f"  pose {key}: landmark error {m['landmark_error_iod']:.3f} IOD, yaw {m['yaw_diff']:.1f} deg, pitch {m['pitch_diff']:.1f} deg")
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_gc(args) -> int:
    """Remove artifact versions no recent materialization, pointer or running run needs; print
    per folder what is freed (swapline/gc.py)."""
    _home_defaults()
    from swapline.gc import Policy, run_gc

    if args.keep < 1:
        print("error: --keep must be at least 1 (the latest materialization is what the next run reads)", file=sys.stderr)
        return 2
    return run_gc(Path(os.environ["SWAPLINE_HOME"]), Policy(keep=args.keep, grace_s=args.grace_minutes * 60), args.dry_run)


def cmd_verify(args) -> int:
    """Is FILE swapline output? C2PA manifest, invisible watermark, sidecar, audit log (swapline/verify.py)."""
    _home_defaults()
    from swapline.verify import verify_file, verify_lines

    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    result = verify_file(path, Path(args.home or os.environ["SWAPLINE_HOME"]))
    print(json.dumps(result) if args.json else "\n".join(verify_lines(result)))
    return 0 if result["recognised"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swapline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, helptext in (
        ("run", cmd_run, "materialize the whole project"),
        ("check", cmd_check, "validate the project file"),
        ("report", cmd_report, "print, identity by identity, whether the data is enough and what is missing"),
        ("init-home", cmd_init_home, "write dagster.yaml into $DAGSTER_HOME"),
        ("status", cmd_status, "what is stale or missing, per asset and partition, and why"),
        ("refresh", cmd_refresh, "materialize exactly what is stale, missing or failed (real Dagster runs, in rounds)"),
        ("collect", cmd_collect, "list URL sources (channels, playlists, feeds), collect and extract what is new"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--project", default=None, help=f"project YAML (default ${PROJECT_ENV} or ./swapline.yaml)")
        p.set_defaults(func=func)
        if name == "status":
            p.add_argument("--all", action="store_true", help="list fresh asset partitions too")
        if name == "refresh":
            p.add_argument("--dry-run", action="store_true", help="print what would be materialized, run nothing")
        if name == "collect":
            p.add_argument("--identity", default=None, help="only this identity's sources (default: all)")
    p = sub.add_parser("evaluate", help="held-out metrics of a swap's model: reconstruction, identity transfer, pose")
    p.add_argument("--project", default=None, help=f"project YAML (default ${PROJECT_ENV} or ./swapline.yaml)")
    p.add_argument("--swap", required=True, help="the swap's name in the project file")
    p.add_argument("--device", default="cpu", help='"cpu" or "cuda"')
    p.add_argument("--out", default=None, help="folder for preview.png and loss_curve.png")
    p.add_argument("--json", action="store_true", help="also print the numbers as one JSON line")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("gc", help="reclaim disk: remove artifact versions nothing needs any more (prints what it frees)")
    p.add_argument("--keep", type=int, default=3, metavar="N", help="versions of the last N materializations of each asset partition stay (default 3)")
    p.add_argument("--grace-minutes", type=float, default=60.0, metavar="MINUTES", help="versions published less than this long ago stay (default 60)")
    p.add_argument("--dry-run", action="store_true", help="print what would be freed, delete nothing")
    p.set_defaults(func=cmd_gc)
    p = sub.add_parser("verify", help="is FILE swapline output? its C2PA manifest, watermark, sidecar and audit record")
    p.add_argument("file", help="a video (or a still exported from one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--home", default=None, help="the swapline home whose CA and audit log to use (default $SWAPLINE_HOME)")
    p.set_defaults(func=cmd_verify)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the supervisor says what happens next
        return 130


if __name__ == "__main__":
    sys.exit(main())
