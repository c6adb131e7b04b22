"""`swapline check` looks at each reference photo: it must show exactly one face, found with the
project's extraction settings. Extraction embeds the largest face of each reference photo, so a
group photo would make someone else the reference, and a photo without a face would fail only
when the run reaches it; both are reported here, by identity, index, file and face count.

The analyzer is the run's: the project's extraction settings, `auto` resolved as extraction
resolves it, so a photo passes here exactly when the run can use it.
"""

from __future__ import annotations

from pathlib import Path

from swapline.project import ProjectError


def check_reference_photos(project, path: Path) -> None:
    """Raise ProjectError listing every reference photo of `project` (read from `path`) that
    does not show exactly one face."""
    if problems := reference_problems(project):
        raise ProjectError(f"{path}: {len(problems)} reference photo problem(s):\n" + "\n".join(f"  {p}" for p in problems))


def reference_problems(project) -> list[str]:
    """One line per reference photo that does not show exactly one face (or cannot be read)."""
    photos = [(name, j, Path(photo)) for name, ident in project.identities.items()
              for j, photo in enumerate(ident.reference_photos)]
    if not photos:
        return []
    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
    from swapline.ops.images import BadMedia, load_image

    settings = AnalyzerSettings.of(project.extraction)
    try:
        analyzer = FaceAnalyzer(settings)
    except FileNotFoundError as exc:  # a backend's or detector's model file not set up: its message says where
        return [f"extraction.backend {settings.backend!r} cannot start: {exc}"]
    problems = []
    for name, j, photo in photos:
        where = f"identities.{name}.reference_photos[{j}] ({photo.name})"
        try:
            image = load_image(photo)
        except BadMedia as exc:
            problems.append(f"{where}: cannot be read: {exc}")
            continue
        faces, small = analyzer.detect_with_stats(image)
        if len(faces) == 1:
            continue
        if faces:
            problems.append(f"{where}: shows {len(faces)} faces; a reference photo must show this person alone: "
                            "crop it to their face or choose another photo")
        else:
            hint = (f" ({small} face(s) narrower than extraction.min_face = {settings.min_face} px)" if small else "")
            problems.append(f"{where}: shows no face{hint}; use a photo where {name}'s face is clear, frontal and at "
                            f"least {settings.min_face} px wide")
    return problems
