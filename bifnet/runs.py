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

from bifnet.errors import BifnetError, ContinuationError, RunFileError
from bifnet.steps import StepContext

log = logging.getLogger("bifnet")

TOP_LEVEL_KEYS = {"model", "connectome", "connectome_options", "parameters", "settings", "steps",
                  "title", "description", "seed", "dask"}
CONNECTOME_OPTIONS = {"drop_self_loops", "drop_regions", "drop_zero_rows", "key", "symmetrize"}

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
    data = {**data, "parameters": dict(data.get("parameters", {}))}
    for item in overrides:
        if "=" not in item:
            raise RunFileError(f"--set expects name=value, got {item!r}")
        name, text = (s.strip() for s in item.split("=", 1))
        value = _parse_value(text)
        if "." in name:
            section, key = name.split(".", 1)
            table = dict(data.get(section, {}))
            table[key] = value
            data[section] = table
        elif name in TOP_LEVEL_KEYS - {"parameters", "steps", "settings", "connectome_options", "dask"}:
            data[name] = value
        else:
            data["parameters"][name] = value
    return data


def load_run_file(path: str | Path, overrides: Sequence[str] = ()) -> RunFile:
    """Read and check a run file.

    Raises
    ------
    RunFileError
        Missing file, bad TOML, unknown keys or step kinds, duplicate step
        names, a ``start`` naming a step that does not come earlier.
    """
    path = Path(path)
    if not path.is_file():
        from bifnet.model import data_folder

        shipped = data_folder("continuation_runs") / f"{path.name}.toml"
        if path.suffix == "" and len(path.parts) == 1 and shipped.is_file():
            path = shipped  # a shipped run file by name, e.g. "demo"
        else:
            names = ", ".join(sorted(p.stem for p in data_folder("continuation_runs").glob("*.toml")))
            raise RunFileError(f"run file not found: {path} (shipped run files, by name: {names or 'none'})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise RunFileError(f"{path}: not valid TOML: {error}") from None
    data = apply_overrides(data, overrides)
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise RunFileError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    if "model" not in data:
        raise RunFileError(f"{path}: missing 'model' (a name in models/ or a path)")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise RunFileError(f"{path}: no [[steps]]")
    names = set()
    for i, step in enumerate(steps, 1):
        if not isinstance(step, dict):
            raise RunFileError(f"{path}: step {i} is not a table")
        name, kind = step.get("name"), step.get("kind")
        if not isinstance(name, str) or not name:
            raise RunFileError(f"{path}: step {i} needs a name")
        if name in names:
            raise RunFileError(f"{path}: two steps are called {name!r}")
        if kind not in STEP_KINDS:
            raise RunFileError(f"{path}: step {name!r} has unknown kind {kind!r} (known: {', '.join(STEP_KINDS)})")
        start = step.get("start")
        if start is not None:
            ref = str(start).split(":", 1)[0]
            if ref not in names:
                raise RunFileError(f"{path}: step {name!r} starts from {start!r} but no earlier step is called {ref!r}")
        names.add(name)
    options = data.get("connectome_options", {})
    bad = sorted(set(options) - CONNECTOME_OPTIONS)
    if bad:
        raise RunFileError(f"{path}: unknown connectome_options {', '.join(bad)} (known: {', '.join(sorted(CONNECTOME_OPTIONS))})")
    return RunFile(path=path, data=data)


def _step_function(kind: str) -> Callable:
    module, _, function = STEP_KINDS[kind].partition(":")
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


def _prepare_folder(out: Path, force: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RunFileError(f"output path exists and is not a folder: {out}")
    if out.exists() and any(out.iterdir()):
        if resume:
            return
        if not force:
            raise RunFileError(f"output folder {out} already exists; use --force to overwrite it or --resume to continue it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _load_connectome(data: dict, model=None):
    """The connectome as given and the model's coupling operator on it (or the row-normalised
    connectome when the model has no coupling)."""
    if "connectome" not in data:
        return None, None
    from bifnet.connectome import coupling_operator, load_connectome

    options = dict(data.get("connectome_options", {}))
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
                     force: bool = False, resume: bool = False) -> Path:
    """Execute every step of a run file and write the run folder.

    Parameters
    ----------
    path : str or Path
        The run file.
    out : str or Path, optional
        Output folder (default ``results/<run file stem>``).
    overrides : sequence of str
        ``name=value`` items (``--set``).
    force : bool
        Overwrite an existing output folder.
    resume : bool
        Reuse an existing output folder (sweeps skip finished points).

    Returns
    -------
    Path
        The output folder.

    Raises
    ------
    RunFileError, ModelError, ConnectomeError
        Before anything is computed.
    ContinuationError
        After all steps ran, when one or more failed (their partial results
        and the manifest are written first).
    """
    from bifnet import io
    from bifnet.model import load_model

    run = load_run_file(path, overrides)
    data = run.data
    model = load_model(data["model"])
    parameters = model.resolve_parameters(data.get("parameters", {}))
    raw_connectome, connectome = _load_connectome(data, model)
    folder = Path(out) if out else Path("results") / run.path.stem
    _prepare_folder(folder, force, resume)

    context = StepContext(model=model, parameters=parameters, connectome=connectome, out_dir=folder,
                          rng_seed=data.get("seed"))
    context.results["__run__"] = data
    manifest: dict[str, Any] = {
        "run_file": str(run.path), "title": data.get("title", run.path.stem),
        "model": {"name": model.name, "source": model.source, "variables": list(model.variable_names),
                  "observe": model.observe, "coupling": _coupling_manifest(model)},
        "parameters": parameters,
        "parameter_units": {n: p.unit for n, p in model.parameters.items()},
        "units": {"time": "ms", "growth_rate": "1/ms", "lyapunov_exponent": "1/ms", "frequency": "Hz",
                  "period": "ms"},
        "connectome": None if raw_connectome is None else {
            **connectome.to_manifest(), "as_given": raw_connectome.to_manifest()},
        "versions": _versions(),
        "engine": "AUTO-07p through bifpy (transpiled, analytic Jacobian)",
        "overrides": list(overrides),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": [],
    }
    io.write_json(folder / "run.json", manifest)
    failed = []
    total = time.perf_counter()
    for i, spec in enumerate(run.steps, 1):
        name, kind = spec["name"], spec["kind"]
        log.info("[%d/%d] %s (%s)", i, len(run.steps), name, kind)
        begin = time.perf_counter()
        entry = {"name": name, "kind": kind}
        try:
            depends = str(spec.get("start", "")).split(":", 1)[0]
            if depends and depends in failed:
                raise RunFileError(f"step {name!r} needs step {depends!r}, which failed")
            summary = _step_function(kind)(context, spec)
            entry.update(status="ok", **(summary or {}))
        except BifnetError as error:
            failed.append(name)
            entry.update(status="failed", error=str(error))
            if isinstance(error, ContinuationError) and error.output_directory:
                entry["engine_output"] = error.output_directory
            log.error("step %s failed: %s", name, error)
        entry["seconds"] = round(time.perf_counter() - begin, 3)
        manifest["steps"].append(entry)
        io.write_json(folder / "run.json", manifest)
    manifest["seconds"] = round(time.perf_counter() - total, 3)
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    io.write_json(folder / "run.json", manifest)
    if failed:
        raise ContinuationError(f"{len(failed)} step(s) failed: {', '.join(failed)}; see {folder / 'run.json'}")
    return folder
