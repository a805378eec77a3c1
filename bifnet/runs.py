"""Run files: read ``continuation_runs/*.toml``, execute the steps, write a run folder.

See ``docs/run-files.md`` for the format and ``docs/outputs.md`` for the files.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import platform
import shutil
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence

from bifnet.errors import (BifnetError, ContinuationError, InfrastructureError, OutputError, RunFileError,
                           SimulationError)
from bifnet.steps import StepContext

log = logging.getLogger("bifnet")

TOP_LEVEL_KEYS = {"model", "connectome", "connectome_options", "parameters", "settings", "steps",
                  "title", "description", "seed", "dask"}
CONNECTOME_OPTIONS = {"drop_self_loops", "drop_regions", "drop_zero_rows", "key"}

# step kind -> "module:function"; modules are imported only when a step needs them
STEP_KINDS: dict[str, str] = {
    "equilibria": "bifnet.continuation.steps:equilibria_step",
    "cycles": "bifnet.continuation.steps:cycles_step",
    "curve": "bifnet.continuation.steps:curve_step",
    "dispersion": "bifnet.transverse.steps:dispersion_step",
    "transverse": "bifnet.transverse.steps:transverse_step",
    "neutral": "bifnet.transverse.steps:neutral_step",
    "simulate": "bifnet.network.steps:simulate_step",
    "validate": "bifnet.network.steps:validate_step",
    "lyapunov": "bifnet.network.steps:lyapunov_step",
    "spectrum": "bifnet.network.steps:spectrum_step",
    "sweep": "bifnet.network.steps:sweep_step",
}
# step kind -> "module:function(context, spec, folder)", run before a resumed run computes anything
PREFLIGHT: dict[str, str] = {"sweep": "bifnet.network.steps:sweep_preflight"}


@dataclasses.dataclass(frozen=True)
class RunFile:
    """A parsed, checked run file."""

    path: Path
    data: dict

    @property
    def steps(self) -> list[dict]:
        return self.data["steps"]


def _parse_value(text: str):
    """A ``--set`` value: TOML scalar or array when it parses, else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``--set name=value`` items: top-level keys, ``section.key``, or model parameters."""
    data = {**data, "parameters": data.get("parameters", {})}
    if isinstance(data["parameters"], dict):
        data["parameters"] = dict(data["parameters"])
    for item in overrides:
        if "=" not in item:
            raise RunFileError(f"--set expects name=value, got {item!r}")
        name, text = (s.strip() for s in item.split("=", 1))
        if not name:
            raise RunFileError(f"--set expects name=value, got {item!r}")
        value = _parse_value(text)
        if "." in name:
            section, key = name.split(".", 1)
            if not key or section == "steps":
                raise RunFileError(f"--set {item!r}: expected section.key (e.g. settings.ds=0.02)")
            current = data.get(section, {})
            if not isinstance(current, dict):
                raise RunFileError(f"--set {item!r}: {section} is not a table in the run file")
            table = dict(current)
            table[key] = value
            data[section] = table
        elif name in TOP_LEVEL_KEYS - {"parameters", "steps", "settings", "connectome_options", "dask"}:
            data[name] = value
        elif not isinstance(data["parameters"], dict):
            raise RunFileError(f"--set {item!r}: parameters is not a table in the run file")
        else:
            data["parameters"][name] = value
    if not data["parameters"]:
        data.pop("parameters")
    return data


def load_run_file(path: str | Path, overrides: Sequence[str] = ()) -> RunFile:
    """Read and check a whole run file (every step, key, type and range).

    The checks are the schema of :mod:`bifnet.runfile_schema`; checks that
    need the model or the connectome follow in :func:`check_run`.

    Raises
    ------
    RunFileError
        Missing or unreadable file, bad TOML, unknown keys (with a
        did-you-mean), wrong types, NaN or inf anywhere, bad ranges or grids,
        unknown step kinds, duplicate step names, a ``start`` naming a step
        that does not come earlier.
    """
    from bifnet.runfile_schema import validate_run_data

    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"run file not found: {path}" if not path.exists() else f"run file is not a file: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise RunFileError(f"{path}: not a text file (a run file is TOML, UTF-8)") from None
    except OSError as error:
        raise RunFileError(f"{path}: cannot read it: {error.strerror or error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RunFileError(f"{path}: not valid TOML: {error}") from None
    data = apply_overrides(data, overrides)
    if "model" not in data:
        raise RunFileError(f"{path}: missing 'model' (a name in models/ or a path)")
    if not data.get("steps"):
        raise RunFileError(f"{path}: no [[steps]]")
    validate_run_data(data, where=str(path))
    return RunFile(path=path, data=data)


_CONTINUATION_KINDS = {"equilibria", "cycles", "curve", "transverse", "neutral"}
_NEEDS_CONNECTOME = {"dispersion", "transverse", "simulate", "validate", "spectrum"}


def _check_model_numbers(model) -> None:
    """A model file's defaults must be finite numbers (NaN or inf would make every step fail late)."""
    import math

    from bifnet.errors import ModelError

    for name, value in model.default_parameters().items():
        if not math.isfinite(float(value)):
            raise ModelError(f"{model.source}: parameter {name!r} = {value} is not a finite number")
    for name, value in zip(model.variable_names, model.default_state()):
        if not math.isfinite(float(value)):
            raise ModelError(f"{model.source}: initial value of {name!r} = {value} is not a finite number")


def _did_you_mean(name, known) -> str:
    import difflib

    hint = difflib.get_close_matches(str(name), list(known), n=1)
    return f"; did you mean {hint[0]!r}?" if hint else f" (known: {', '.join(known)})"


def check_run(run: RunFile, model, connectome) -> None:
    """Checks of every step that need the model or the connectome, before anything runs.

    Raises
    ------
    RunFileError
        A step names an unknown parameter or variable, a mode the connectome
        does not have, needs a connectome the run has none of, or has
        continuation settings that cannot work.
    """
    from bifnet.continuation.settings import ContinuationSettings

    data = run.data
    params = set(model.parameters)

    def names(step, key, values, extra=()):
        for name in values:
            if name not in params and name not in extra:
                raise RunFileError(f"{run.path}: step {step!r}: {key} names unknown parameter {name!r}"
                                   + _did_you_mean(name, model.parameter_names))

    top_bounds = dict((data.get("settings") or {}).get("bounds") or {})
    names("(settings)", "settings.bounds", top_bounds)
    for spec in run.steps:
        step, kind = spec["name"], spec["kind"]
        where = f"{run.path}: step {step!r}"
        names(step, "parameters", spec.get("parameters") or {})
        free = spec.get("free")
        free = [free] if isinstance(free, str) else list(free or [])
        names(step, "free", free)
        lambda_ok = ("Lambda",)  # the augmented systems' parameter (as step_settings allows)
        names(step, "range", spec.get("range") or {}, lambda_ok)
        names(step, "settings.bounds", (spec.get("settings") or {}).get("bounds") or {}, lambda_ok)
        names(step, "values", spec.get("values") or {})
        names(step, "grid", spec.get("grid") or {})
        if kind in ("equilibria", "cycles", "neutral") and len(free) > 1:
            raise RunFileError(f"{where}: free takes one parameter, got {free}")
        if kind in _CONTINUATION_KINDS:
            table = {**(data.get("settings") or {}), **(spec.get("settings") or {})}
            # as step_settings merges them: the step's settings table replaces top-level keys, bounds included
            bounds = {**dict(table.get("bounds") or {}), **(spec.get("range") or {})}
            if kind == "neutral":
                bounds.setdefault("Lambda", [-1.0, 1.0])
            missing = [f for f in free if f not in bounds]
            if missing:
                raise RunFileError(f"{where}: give a range for {', '.join(missing)},"
                                   f" e.g. range = {{ {missing[0]} = [0.0, 40.0] }}")
            try:
                ContinuationSettings.from_mapping({**table, "bounds": bounds}, where="settings")
            except BifnetError as error:
                raise RunFileError(f"{where}: {error}") from None
        x0 = spec.get("x0")
        if x0 is not None and len(x0) != model.n_variables:
            raise RunFileError(f"{where}: x0 needs {model.n_variables} values ({', '.join(model.variable_names)}),"
                               f" got {len(x0)}")
        variable = spec.get("variable")
        if variable is not None and variable not in model.variable_names:
            raise RunFileError(f"{where}: variable {variable!r} is not a variable of {model.name}"
                               + _did_you_mean(variable, model.variable_names))
        needs = kind in _NEEDS_CONNECTOME or (kind == "lyapunov" and not spec.get("homogeneous", False)) \
            or (kind == "sweep" and (spec.get("network", False) or spec.get("analysis") == "dispersion"))
        if needs and connectome is None:
            raise RunFileError(f"{where}: needs a connectome: add connectome = \"tvb68\" (or a path) to the run file")
        if connectome is not None:
            n = connectome.n_regions
            modes = spec.get("modes")
            modes = modes if isinstance(modes, list) else []
            if kind in ("simulate", "spectrum", "validate") and spec.get("mode") is not None:
                modes = modes + [spec["mode"]]
            bad = [m for m in modes if m > n]
            if bad:
                raise RunFileError(f"{where}: no mode {bad[0]} (the connectome has {n} regions)")


def _step_function(kind: str, table: dict[str, str] | None = None) -> Callable:
    module, _, function = (table or STEP_KINDS)[kind].partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as error:
        raise RunFileError(f"step kind {kind!r} is not available in this version of bifnet ({error})") from None


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("bifnet", "bifpy", "numpy", "scipy", "sympy", "numba", "pandas", "xarray"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


MANIFEST_MARKER = "bifnet run folder"
_LEGACY_OUTPUTS = ("*.csv", "*.png", "*.nc", "*.json", "*.jsonl", "*.mp4")


def _is_within(inner: Path, outer: Path) -> bool:
    try:
        inner.relative_to(outer)
        return True
    except ValueError:
        return False


def _read_manifest(folder: Path) -> dict | None:
    import json

    try:
        data = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _foreign_entries(folder: Path, *, partial: bool = False) -> list[str] | None:
    """Entries of ``folder`` that bifnet did not write; ``None`` when it holds no bifnet manifest.

    ``partial``: the folder of an interrupted run, whose last step's files may not be listed yet: files
    named like bifnet's outputs count as written by bifnet.
    """
    import fnmatch

    manifest = _read_manifest(folder)
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
    foreign = _foreign_entries(target)
    if foreign is None:
        raise RunFileError(f"{flag} refuses {out}: it holds no bifnet run.json, so bifnet did not write it;"
                           " choose an empty or new folder")
    if foreign:
        raise RunFileError(f"{flag} refuses {out}: it holds {foreign[0]!r}, which bifnet did not write;"
                           " move it away or choose another --out")
    return True


def _staging_folder(target: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        candidate = target.with_name(f"{target.name}.partial-{stamp}" + (f"-{i}" if i else ""))
        if not candidate.exists():
            return candidate
    raise OutputError(f"cannot choose a staging folder next to {target}")  # pragma: no cover


def _link_or_copy(source, destination):
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` (two renames; the old result is deleted last)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _load_connectome(data: dict):
    if "connectome" not in data:
        return None, None
    from bifnet.connectome import load_connectome

    options = {k: v for k, v in dict(data.get("connectome_options") or {}).items() if v is not None}
    raw = load_connectome(data["connectome"], key=options.pop("key", None), **options)
    return raw, raw.row_normalised()


_FINGERPRINT_PACKAGES = ("bifnet", "bifpy", "numpy", "scipy", "sympy", "numba")


def _digest(value) -> str:
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
        connectome = _digest({"sha256": raw_connectome.to_manifest().get("sha256"),
                              "options": data.get("connectome_options") or {}})
    return {
        "model": hashlib.sha256(model_text).hexdigest(),
        "parameters": _digest(parameters),
        "connectome": connectome,
        "settings": _digest({"settings": data.get("settings") or {}, "seed": data.get("seed")}),
        "versions": {k: versions.get(k) for k in _FINGERPRINT_PACKAGES},
        "steps": {spec["name"]: _digest(spec) for spec in data["steps"]},
    }


def _compare_for_resume(old: dict | None, new: dict, new_parameters: dict, folder: Path) -> None:
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


def execute_run_file(path: str | Path, *, out: str | Path | None = None, overrides: Sequence[str] = (),
                     force: bool = False, resume: bool = False, retry_failed: bool = False) -> Path:
    """Execute every step of a run file and write the run folder.

    The whole run file is checked first (:func:`load_run_file`,
    :func:`check_run`). The run writes into a staging folder next to the
    output folder, ``<out>.partial-<date>-<time>``, and replaces the output
    folder with it only when every step succeeded (or when there was no
    earlier result). A failed, interrupted or killed run leaves an earlier
    result untouched, and its own output in the staging folder.

    Parameters
    ----------
    path : str or Path
        The run file.
    out : str or Path, optional
        Output folder (default ``results/<run file stem>``).
    overrides : sequence of str
        ``name=value`` items (``--set``).
    force : bool
        Replace an earlier result. Refused unless the folder is empty or holds
        only what bifnet wrote, and never for the current folder, a folder
        holding the run file, the home folder or the root.
    resume : bool
        Continue an earlier result (sweeps skip finished points). Refused when
        the model, parameters, connectome, settings or package versions changed.
    retry_failed : bool
        With ``resume``: sweeps compute again the points that failed.

    Returns
    -------
    Path
        The output folder.

    Raises
    ------
    RunFileError, ModelError, ConnectomeError
        Before anything is computed.
    OutputError
        The output folder cannot be written (the run stops).
    ContinuationError, SimulationError
        After all steps ran, when one or more failed (the class of the first
        failure); the manifest is written first.
    """
    from bifnet import io
    from bifnet.model import load_model

    run = load_run_file(path, overrides)
    data = run.data
    model = load_model(data["model"])
    _check_model_numbers(model)
    parameters = model.resolve_parameters(data.get("parameters", {}))
    raw_connectome, connectome = _load_connectome(data)
    check_run(run, model, connectome)
    folder = Path(out) if out else Path("results") / run.path.stem
    had_old = check_output_folder(folder, run.path, force=force, resume=resume)
    target = folder.resolve()
    versions = _versions()
    fingerprint = run_fingerprint(model, parameters, data, raw_connectome, versions)
    source = None  # the earlier result that --resume continues
    if resume and had_old:
        _compare_for_resume(_read_manifest(target), fingerprint, parameters, folder)
        source = target
    elif resume:
        source = _matching_partial(target, fingerprint, parameters)
        if source is not None:
            log.info("resuming from %s (the output of an interrupted run)", source)
    staging = _staging_folder(target)
    try:
        staging.mkdir(parents=True)
        if source is not None:
            shutil.copytree(source, staging, copy_function=_link_or_copy, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".*"))
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"cannot write next to {folder}: {error.strerror or error}") from None

    context = StepContext(model=model, parameters=parameters, connectome=connectome, out_dir=staging,
                          rng_seed=data.get("seed"), fingerprint=fingerprint, retry_failed=retry_failed)
    context.results["__run__"] = data
    if source is not None:
        try:
            for spec in run.steps:
                if spec["kind"] in PREFLIGHT:
                    _step_function(spec["kind"], PREFLIGHT)(context, spec, source)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    manifest: dict[str, Any] = {
        "bifnet": {"marker": MANIFEST_MARKER, "format": 1, "files": []},
        "run_file": str(run.path), "title": data.get("title", run.path.stem),
        "model": {"name": model.name, "source": model.source, "variables": list(model.variable_names)},
        "parameters": parameters,
        "parameter_units": {n: p.unit for n, p in model.parameters.items()},
        "units": {"time": "ms", "growth_rate": "1/ms", "lyapunov_exponent": "1/ms", "frequency": "Hz",
                  "period": "ms"},
        "connectome": None if raw_connectome is None else {
            **connectome.to_manifest(), "as_given": raw_connectome.to_manifest()},
        "versions": versions,
        "fingerprint": fingerprint,
        "engine": "AUTO-07p through bifpy (transpiled, analytic Jacobian)",
        "overrides": list(overrides),
        "resumed": None if source is None else str(source),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": [],
    }

    def write_manifest():
        manifest["bifnet"]["files"] = sorted(p.name for p in staging.iterdir()
                                             if not p.name.startswith(".") and p.name != "run.json")
        io.write_json(staging / "run.json", manifest)

    failed: list[str] = []
    first_error: BifnetError | None = None
    total = time.perf_counter()
    try:
        write_manifest()
        for i, spec in enumerate(run.steps, 1):
            name, kind = spec["name"], spec["kind"]
            log.info("[%d/%d] %s (%s)", i, len(run.steps), name, kind)
            begin = time.perf_counter()
            entry = {"name": name, "kind": kind}
            try:
                depends = str(spec.get("start", "")).split(":", 1)[0]
                if depends and depends in failed:
                    raise RunFileError(f"step {name!r} needs step {depends!r}, which failed")
                summary = dict(_step_function(kind)(context, spec) or {})
                entry.update(status=summary.pop("status", "ok"), **summary)
            except InfrastructureError:  # the disk, a pool, a scheduler: stop the run, keep the partial output
                raise
            except OSError as error:
                raise OutputError(f"step {name!r}: cannot write the output: {error.strerror or error}"
                                  f" ({getattr(error, 'filename', '') or staging})") from None
            except BifnetError as error:
                failed.append(name)
                first_error = first_error or error
                entry.update(status="failed", error=str(error), error_kind=type(error).__name__)
                if isinstance(error, ContinuationError) and error.output_directory:
                    entry["engine_output"] = error.output_directory
                log.error("step %s failed: %s", name, error)
            entry["seconds"] = round(time.perf_counter() - begin, 3)
            manifest["steps"].append(entry)
            write_manifest()
        manifest["seconds"] = round(time.perf_counter() - total, 3)
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_manifest()
    except OSError as error:
        raise _keep_partial(OutputError(f"cannot write the output: {error.strerror or error}"), staging) from None
    except BaseException as error:
        raise _keep_partial(error, staging)
    if failed:
        message = f"{len(failed)} step(s) failed: {', '.join(failed)}"
        if had_old and not resume:
            message += f"; the earlier result in {folder} is kept, this run's output is in {staging}"
            result = staging
        else:
            _swap_in_or_keep(staging, target, folder)
            result = folder
        message += f"; see {result / 'run.json'}"
        cls = type(first_error) if type(first_error) in (ContinuationError, SimulationError, RunFileError) \
            else ContinuationError
        raise cls(message)
    _swap_in_or_keep(staging, target, folder)
    if source is not None and source != target and _foreign_entries(source, partial=True) == []:
        shutil.rmtree(source, ignore_errors=True)  # the interrupted run's folder: now part of the result
    return folder


def _matching_partial(target: Path, fingerprint: dict, parameters: dict) -> Path | None:
    """The newest ``<out>.partial-*`` folder of an interrupted run with the same fingerprint."""
    candidates = sorted(target.parent.glob(f"{target.name}.partial-*"), key=lambda p: p.stat().st_mtime,
                        reverse=True)
    for candidate in candidates:
        if not candidate.is_dir() or _foreign_entries(candidate, partial=True) != []:
            continue
        try:
            _compare_for_resume(_read_manifest(candidate), fingerprint, parameters, candidate)
        except RunFileError:
            continue
        return candidate
    return None


def _keep_partial(error: BaseException, staging: Path) -> BaseException:
    """Note on ``error`` where this run's partial output stays (``partial_output``)."""
    try:
        error.partial_output = staging  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover
        pass
    log.debug("partial output kept in %s", staging)
    return error


def _swap_in_or_keep(staging: Path, target: Path, folder: Path) -> None:
    try:
        _swap_in(staging, target)
    except OSError as error:
        raise OutputError(f"cannot move the result into {folder}: {error.strerror or error};"
                          f" it is in {staging}") from None
