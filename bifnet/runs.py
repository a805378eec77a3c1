"""Run files: read ``continuation_runs/*.toml``, execute the steps, write a run folder.

See ``docs/run-files.md`` for the format and ``docs/outputs.md`` for the files.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import platform
import shutil
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence

from bifnet.errors import (BifnetError, ContinuationError, InfrastructureError, OutputError, RunFileError,
                           SimulationError)
from bifnet.run_folder import (MANIFEST_MARKER, check_output_folder, compare_for_resume, foreign_entries,
                               keep_partial, link_or_copy, matching_partial, read_manifest, run_fingerprint,
                               staging_folder, swap_in_or_keep)
from bifnet.steps import StepContext

log = logging.getLogger("bifnet")

TOP_LEVEL_KEYS = {"model", "connectome", "connectome_options", "parameters", "settings", "steps",
                  "title", "description", "seed", "dask"}
CONNECTOME_OPTIONS = {"drop_self_loops", "drop_regions", "drop_zero_rows", "key", "symmetrize"}  # the schema
# checks them (bifnet/runfile_schema.py is where keys, types and ranges of the run file are declared)

# step kind -> "module:function"; modules are imported only when a step needs them
STEP_KINDS: dict[str, str] = {
    "equilibria": "bifnet.continuation.steps:equilibria_step",
    "cycles": "bifnet.continuation.steps:cycles_step",
    "curve": "bifnet.continuation.steps:curve_step",
    "dispersion": "bifnet.transverse.steps:dispersion_step",
    "transverse": "bifnet.transverse.steps:transverse_step",
    "neutral": "bifnet.transverse.steps:neutral_step",
    "pattern": "bifnet.patterns.steps:pattern_step",
    "pattern_curve": "bifnet.patterns.steps:pattern_curve_step",
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
        from bifnet.model import data_folder

        shipped = data_folder("continuation_runs") / f"{path.name}.toml"
        if path.suffix == "" and len(path.parts) == 1 and shipped.is_file():
            path = shipped  # a shipped run file by name, e.g. "demo"
        elif path.exists():
            raise RunFileError(f"run file is not a file: {path}")
        else:
            names = ", ".join(sorted(p.stem for p in data_folder("continuation_runs").glob("*.toml")))
            raise RunFileError(f"run file not found: {path} (shipped run files, by name: {names or 'none'})")
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
        k = spec.get("k")
        if kind in ("lyapunov", "sweep") and k is not None:
            network = spec.get("network", False) if kind == "sweep" else not spec.get("homogeneous", False)
            dimension = model.n_variables * (connectome.n_regions if network and connectome is not None else 1)
            if k > dimension:
                raise RunFileError(f"{where}: k = {k} exponents, but the system has {dimension} dimensions")
        if connectome is not None:
            n = connectome.n_regions
            modes = spec.get("modes")
            modes = modes if isinstance(modes, list) else []
            if kind in ("simulate", "spectrum", "validate") and spec.get("mode") is not None:
                modes = modes + [spec["mode"]]
            bad = [m for m in modes if m > n]
            if bad:
                raise RunFileError(f"{where}: no mode {bad[0]} (the connectome has {n} regions)")
            rule = spec.get("modes")
            if kind == "transverse" and isinstance(rule, dict):
                # a Lambda band that holds no non-uniform mode would leave the map without modes
                import numpy as np

                from bifnet.transverse.steps import select_modes

                eigenvalues = connectome.spectrum().eigenvalues
                if not select_modes(rule, eigenvalues, step):
                    real = np.real(eigenvalues[1:])
                    raise RunFileError(f"{where}: modes = {rule!r} selects no mode: the non-uniform modes have "
                                       f"Re Lambda in [{real.min():.4g}, {real.max():.4g}]")


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


def _load_connectome(data: dict, model=None):
    """The connectome as given and the model's coupling operator on it (or the row-normalised
    connectome when the model has no coupling)."""
    if "connectome" not in data:
        return None, None
    from bifnet.connectome import coupling_operator, load_connectome

    options = {k: v for k, v in dict(data.get("connectome_options") or {}).items() if v is not None}
    diffusive = model is not None and model.coupling is not None and model.coupling.scheme == "diffusive"
    if diffusive and model.coupling.laplacian == "combinatorial":
        options.setdefault("allow_zero_rows", True)  # L = D - W needs no row normalisation
    raw = load_connectome(data["connectome"], key=options.pop("key", None), **options)
    if model is not None and model.coupling is not None:
        return raw, coupling_operator(raw, model.coupling)
    return raw, raw.row_normalised()


def _coupling_manifest(model) -> dict | None:
    coupling = model.coupling
    if coupling is None:
        return None
    return {"scheme": coupling.scheme, "laplacian": coupling.laplacian if coupling.scheme == "diffusive" else None,
            "operator": coupling.operator, "mode_sign": coupling.mode_sign,
            "uniform_eigenvalue": coupling.uniform_eigenvalue,
            "channels": [{"variable": c.variable, "input": c.input, "strength": c.strength}
                         for c in coupling.channels]}


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
    from bifnet._blas import single_threaded_blas
    from bifnet.model import load_model

    run = load_run_file(path, overrides)
    data = run.data
    model = load_model(data["model"])
    _check_model_numbers(model)
    parameters = model.resolve_parameters(data.get("parameters", {}))
    raw_connectome, connectome = _load_connectome(data, model)
    check_run(run, model, connectome)
    folder = Path(out) if out else Path("results") / run.path.stem
    had_old = check_output_folder(folder, run.path, force=force, resume=resume)
    target = folder.resolve()
    versions = _versions()
    fingerprint = run_fingerprint(model, parameters, data, raw_connectome, versions)
    source = None  # the earlier result that --resume continues
    if resume and had_old:
        compare_for_resume(read_manifest(target), fingerprint, parameters, folder)
        source = target
    elif resume:
        source = matching_partial(target, fingerprint, parameters)
        if source is not None:
            log.info("resuming from %s (the output of an interrupted run)", source)
    staging = staging_folder(target)
    try:
        staging.mkdir(parents=True)
        if source is not None:
            shutil.copytree(source, staging, copy_function=link_or_copy, dirs_exist_ok=True,
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
        "model": {"name": model.name, "source": model.source, "variables": list(model.variable_names),
                  "observe": model.observe, "coupling": _coupling_manifest(model)},
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
                with single_threaded_blas():  # bifnet's matrices are small: see bifnet._blas
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
        raise keep_partial(OutputError(f"cannot write the output: {error.strerror or error}"), staging) from None
    except BaseException as error:
        raise keep_partial(error, staging)
    if failed:
        message = f"{len(failed)} step(s) failed: {', '.join(failed)}"
        if had_old:  # --force or --resume onto a result: that result stays until a run finishes
            message += f"; the earlier result in {folder} is kept, this run's output is in {staging}"
            result = staging
        else:
            swap_in_or_keep(staging, target, folder)
            result = folder
        message += f"; see {result / 'run.json'}"
        cls = type(first_error) if type(first_error) in (ContinuationError, SimulationError, RunFileError) \
            else ContinuationError
        raise cls(message)
    swap_in_or_keep(staging, target, folder)
    if source is not None and source != target and foreign_entries(source, partial=True) == []:
        shutil.rmtree(source, ignore_errors=True)  # the interrupted run's folder: now part of the result
    return folder
