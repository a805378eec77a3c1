"""Run folders: what ``--force`` may replace, staging and swapping in, and the content key of ``--resume``.

A run writes into a staging folder next to its output folder,
``<out>.partial-<date>-<time>``, and swaps it in at the end
(:func:`swap_in`). :func:`check_output_folder` decides whether an existing
folder may be replaced or resumed; :func:`run_fingerprint` hashes what
decides a run's numbers, and :func:`compare_for_resume` refuses a resume
when any of it changed. Used by :mod:`bifnet.runs`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from bifnet.errors import OutputError, RunFileError

log = logging.getLogger("bifnet")

MANIFEST_MARKER = "bifnet run folder"
_LEGACY_OUTPUTS = ("*.csv", "*.png", "*.nc", "*.json", "*.jsonl", "*.mp4")


def _is_within(inner: Path, outer: Path) -> bool:
    try:
        inner.relative_to(outer)
        return True
    except ValueError:
        return False


def read_manifest(folder: Path) -> dict | None:
    import json

    try:
        data = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def foreign_entries(folder: Path, *, partial: bool = False) -> list[str] | None:
    """Entries of ``folder`` that bifnet did not write; ``None`` when it holds no bifnet manifest.

    ``partial``: the folder of an interrupted run, whose last step's files may not be listed yet: files
    named like bifnet's outputs count as written by bifnet.
    """
    import fnmatch

    manifest = read_manifest(folder)
    if manifest is None:
        return None
    entries = sorted(p.name for p in folder.iterdir())
    marker = manifest.get("bifnet")
    if isinstance(marker, dict) and marker.get("marker") == MANIFEST_MARKER:
        written = set(marker.get("files") or []) | {"run.json"}
        return [e for e in entries if e not in written and not e.startswith(".")
                and not (partial and (folder / e).is_file()
                         and any(fnmatch.fnmatch(e, pattern) for pattern in _LEGACY_OUTPUTS))]
    if isinstance(manifest.get("versions"), dict) and "bifnet" in manifest["versions"] and "steps" in manifest:
        # a manifest written before the marker: only files that look like bifnet outputs
        return [e for e in entries if not (folder / e).is_file()
                or not any(fnmatch.fnmatch(e, pattern) for pattern in _LEGACY_OUTPUTS)]
    return None


def check_output_folder(out: Path, run_path: Path, *, force: bool, resume: bool) -> bool:
    """Check that a run may write ``out``; ``True`` when it holds an earlier result to replace or resume.

    Raises
    ------
    RunFileError
        ``out`` is a file, is or contains the current folder, the run file,
        the home folder or the root; or it holds something and neither
        ``--force`` nor ``--resume`` is given; or ``--force`` is given but the
        folder holds files bifnet did not write.
    """
    target = out.resolve()
    for parent in [target, *target.parents]:
        if parent.exists() and not parent.is_dir():
            raise RunFileError(f"output folder {out}: {parent} exists and is not a folder")
    if not target.exists():
        return False
    if not target.is_dir():
        raise RunFileError(f"output path exists and is not a folder: {out}")
    # a result replaces the whole folder: never the root, home, the current folder or the run file's
    flag = "--resume" if resume else ("--force" if force else "--out")
    home = Path.home().resolve()
    cwd = Path.cwd().resolve()
    if target == Path(target.anchor) or target == home or _is_within(home, target):
        raise RunFileError(f"{flag} refuses {out}: it is the root or your home folder; choose a folder for results")
    if _is_within(cwd, target):
        raise RunFileError(f"{flag} refuses {out}: it is (or contains) the current folder; choose a results folder")
    if _is_within(run_path.resolve(), target):
        raise RunFileError(f"{flag} refuses {out}: it contains the run file {run_path}; choose another --out")
    if not any(target.iterdir()):
        return False
    if not (force or resume):
        raise RunFileError(f"output folder {out} already exists; use --force to replace it or --resume to continue it")
    foreign = foreign_entries(target)
    if foreign is None:
        raise RunFileError(f"{flag} refuses {out}: it holds no bifnet run.json, so bifnet did not write it;"
                           " choose an empty or new folder")
    if foreign:
        raise RunFileError(f"{flag} refuses {out}: it holds {foreign[0]!r}, which bifnet did not write;"
                           " move it away or choose another --out")
    return True


def staging_folder(target: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        candidate = target.with_name(f"{target.name}.partial-{stamp}" + (f"-{i}" if i else ""))
        if not candidate.exists():
            return candidate
    raise OutputError(f"cannot choose a staging folder next to {target}")  # pragma: no cover


def link_or_copy(source, destination):
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` (two renames; the old result is deleted last)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_FINGERPRINT_PACKAGES = ("bifnet", "bifpy", "numpy", "scipy", "sympy", "numba")


def digest(value) -> str:
    import hashlib
    import json

    from bifnet.io import _jsonable

    return hashlib.sha256(json.dumps(_jsonable(value), sort_keys=True).encode()).hexdigest()


def run_fingerprint(model, parameters: dict, data: dict, raw_connectome, versions: dict) -> dict:
    """What decides a run's numbers, hashed by part (recorded in ``run.json``, compared by ``--resume``).

    Parts: ``model`` (sha256 of the model file's text), ``parameters``,
    ``connectome`` (the matrix's sha256 and the options), ``settings``
    (the top-level settings and seed), ``versions`` (bifnet, bifpy, numpy,
    scipy, sympy, numba) and ``steps`` (one hash per step spec).
    """
    import hashlib

    try:
        model_text = Path(model.source).read_bytes()
    except OSError:
        model_text = repr(model).encode()
    connectome = None
    if raw_connectome is not None:
        connectome = digest({"sha256": raw_connectome.to_manifest().get("sha256"),
                              "options": data.get("connectome_options") or {}})
    return {
        "model": hashlib.sha256(model_text).hexdigest(),
        "parameters": digest(parameters),
        "connectome": connectome,
        "settings": digest({"settings": data.get("settings") or {}, "seed": data.get("seed")}),
        "versions": {k: versions.get(k) for k in _FINGERPRINT_PACKAGES},
        "steps": {spec["name"]: digest(spec) for spec in data["steps"]},
    }


def compare_for_resume(old: dict | None, new: dict, new_parameters: dict, folder: Path) -> None:
    """Refuse ``--resume`` when anything that decides the numbers changed (one line naming it)."""
    advice = "; use --force to start again, or another --out"
    if old is None or not isinstance(old.get("fingerprint"), dict):
        raise RunFileError(f"--resume: {folder} has no content key (written by an older bifnet or damaged){advice}")
    before = old["fingerprint"]
    if before.get("model") != new["model"]:
        raise RunFileError(f"--resume: the model file changed since the run in {folder}{advice}")
    if before.get("parameters") != new["parameters"]:
        previous = old.get("parameters") or {}
        changed = [f"{k} {previous.get(k)!r} -> {v!r}" for k, v in new_parameters.items() if previous.get(k) != v]
        raise RunFileError(f"--resume: parameters changed since the run in {folder} ({', '.join(changed[:3]) or 'values'})"
                           f"{advice}")
    if before.get("connectome") != new["connectome"]:
        was = (old.get("connectome") or {}).get("as_given", {}).get("name") if old.get("connectome") else None
        raise RunFileError(f"--resume: the connectome or its options changed since the run in {folder}"
                           f" (was {was!r}){advice}")
    if before.get("settings") != new["settings"]:
        raise RunFileError(f"--resume: the top-level settings or seed changed since the run in {folder}{advice}")
    for package, version in new["versions"].items():
        if (before.get("versions") or {}).get(package) != version:
            raise RunFileError(f"--resume: {package} changed since the run in {folder}"
                               f" ({(before.get('versions') or {}).get(package)} -> {version}){advice}")


def matching_partial(target: Path, fingerprint: dict, parameters: dict) -> Path | None:
    """The newest ``<out>.partial-*`` folder of an interrupted run with the same fingerprint."""
    candidates = sorted(target.parent.glob(f"{target.name}.partial-*"), key=lambda p: p.stat().st_mtime,
                        reverse=True)
    for candidate in candidates:
        if not candidate.is_dir() or foreign_entries(candidate, partial=True) != []:
            continue
        try:
            compare_for_resume(read_manifest(candidate), fingerprint, parameters, candidate)
        except RunFileError:
            continue
        return candidate
    return None


def keep_partial(error: BaseException, staging: Path) -> BaseException:
    """Note on ``error`` where this run's partial output stays (``partial_output``)."""
    try:
        error.partial_output = staging  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover
        pass
    log.debug("partial output kept in %s", staging)
    return error


def swap_in_or_keep(staging: Path, target: Path, folder: Path) -> None:
    try:
        swap_in(staging, target)
    except OSError as error:
        raise OutputError(f"cannot move the result into {folder}: {error.strerror or error};"
                          f" it is in {staging}") from None
