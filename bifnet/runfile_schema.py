"""The run file's schema: one pydantic model per step kind, checked before anything runs.

:func:`validate_run_data` checks a parsed run file (after ``--set``) against
these models and raises :class:`~bifnet.errors.RunFileError` with one line
naming the first problem (the TOML path of the key, what was expected, and a
did-you-mean for misspelt keys). :func:`json_schema` gives the JSON Schema
published in ``docs/runfile.schema.json`` (``python -m bifnet.runfile_schema``
prints it).

To add a key to a step kind, add a field to its model here; the step
function reads it from the spec as before. Checks that need the model or the
connectome (parameter names, variable names, mode numbers) are made by
:mod:`bifnet.runs` right after this one, also before anything runs.
"""

from __future__ import annotations

import difflib
import re
import typing
import math
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bifnet.errors import RunFileError

Number = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1)]
Pair = Annotated[list[Number], Field(min_length=2, max_length=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------
# grids and scans: explicit values, or { start, stop, step } / { start, stop, num }

class GridRange(_Strict):
    """``{ start = 0.0, stop = 16.0, num = 33 }`` or ``{ start = 0.0, stop = 16.0, step = 0.5 }``
    (``stop`` included when it falls on the grid)."""

    start: Number
    stop: Number
    num: PositiveInt | None = None
    step: Positive | None = None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.num is None) == (self.step is None):
            raise ValueError("give exactly one of num or step")
        if self.step is not None and self.stop < self.start:
            raise ValueError("stop must not be below start with step (it counts upwards)")
        if self.step is not None and (self.stop - self.start) / self.step > 1e6:
            raise ValueError("more than a million values")
        if self.num is not None and self.num > 1_000_000:
            raise ValueError("more than a million values")
        return self

    def values(self) -> np.ndarray:
        if self.num is not None:
            return np.linspace(self.start, self.stop, self.num)
        n = int(math.floor((self.stop - self.start) / self.step * (1 + 1e-12) + 1e-9)) + 1
        return self.start + self.step * np.arange(n)


GridAxis = Union[Annotated[list[Number], Field(min_length=1)], GridRange]


def _check_axis_list(value, name="values"):
    """A three-number list ending in an integer looks like the old ``[low, high, count]``: refuse it."""
    if isinstance(value, dict):
        try:
            GridRange.model_validate(value)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            loc = ".".join(map(str, first["loc"]))
            raise ValueError(f"{name}{'.' + loc if loc else ''}: {first['msg'].removeprefix('Value error, ')}"
                             " (a range is { start, stop, num } or { start, stop, step })") from None
        return value
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value) \
            and isinstance(value[2], int) and not isinstance(value[2], bool):
        raise ValueError(f"{name} = {value} is ambiguous (values, or low, high and a count?): write "
                         f"{{ start = {float(value[0])}, stop = {float(value[1])}, num = {value[2]} }} for a range,"
                         f" or floats [{', '.join(str(float(v)) for v in value)}] for these values")
    if isinstance(value, list) and len(value) == 0:
        raise ValueError(f"{name} is empty: give at least one value")
    return value


def axis_values(value) -> np.ndarray:
    """The 1-D float array of a validated grid axis (a list or a range table)."""
    if isinstance(value, dict):
        return GridRange(**value).values()
    if isinstance(value, GridRange):
        return value.values()
    return np.atleast_1d(np.asarray(value, dtype=float))


class _GridMixin:
    @field_validator("grid", "values", mode="before", check_fields=False)
    @classmethod
    def _axes(cls, table):
        if isinstance(table, dict):
            for name, value in table.items():
                _check_axis_list(value, str(name))
        return table


# ---------------------------------------------------------------------------
# settings (the fields of ContinuationSettings; their meaning is checked there)

class Settings(_Strict):
    ds: Number | None = None
    ds_min: Number | None = None
    ds_max: Number | None = None
    max_steps: int | None = None
    ntst: int | None = None
    ncol: int | None = None
    bounds: dict[str, Pair] | None = None
    max_period: Number | None = None
    tolerance: Number | None = None
    detect_cycle_bifurcations: bool | None = None
    save_every: int | None = None


# ---------------------------------------------------------------------------
# steps

Free = Union[str, Annotated[list[str], Field(min_length=1)]]
Parameters = dict[str, Number]
StepName = Annotated[str, Field(min_length=1, pattern=r"^[^:\s]+$")]


class _Step(_Strict):
    name: StepName
    kind: str


class _Continuation(_Step):
    free: Free | None = None
    range: dict[str, Pair] | None = None
    settings: Settings | None = None
    parameters: Parameters | None = None
    start: str | None = None
    plot: Any = None


class EquilibriaStep(_GridMixin, _Continuation):
    kind: Literal["equilibria"]
    free: Free
    values: dict[str, GridAxis | Number] | None = None
    x0: Annotated[list[Number], Field(min_length=1)] | None = None


class CyclesStep(_Continuation):
    kind: Literal["cycles"]
    start: str
    period_doubling: Annotated[int, Field(ge=0)] = 0
    workers: PositiveInt | None = Field(None, description="threads for independent start branches "
                                        "(default: the CPUs available)")


class CurveStep(_Continuation):
    kind: Literal["curve"]
    start: str
    free: Annotated[list[str], Field(min_length=2, max_length=2)]
    dedupe: bool = True
    max_per_branch: PositiveInt | None = None


class DispersionStep(_Step):
    kind: Literal["dispersion"]
    parameters: Parameters | None = None
    x0: Annotated[list[Number], Field(min_length=1)] | None = None
    solution: Literal["auto", "EP", "LC"] = "auto"
    curve_points: Annotated[int, Field(ge=2)] = 401
    Lambda_range: Pair | None = None

    @model_validator(mode="after")
    def _range(self):
        if self.Lambda_range is not None and not self.Lambda_range[0] < self.Lambda_range[1]:
            raise ValueError(f"Lambda_range needs low < high, got {self.Lambda_range}")
        return self


class LambdaBand(_Strict):
    Lambda: Pair


# modes by number, or by a rule that means the same on every connectome (bifnet.transverse.steps.select_modes)
ModeRule = Union[Literal["all", "most_negative", "most_positive"], Annotated[list[PositiveInt], Field(min_length=1)],
                 LambdaBand]


class TransverseStep(_Continuation):
    kind: Literal["transverse"]
    free: Annotated[list[str], Field(min_length=2, max_length=2)]
    modes: ModeRule = "all"
    levels: PositiveInt | Annotated[list[Number], Field(min_length=1)] = 7
    cycles: bool = True
    map_points: Annotated[int, Field(ge=2)] = 201
    cycle_curves: ModeRule | Annotated[list[PositiveInt], Field(max_length=0)] = Field(default_factory=list)
    # the map on a grid: the step of each free parameter (bifnet.transverse.maps)
    grid: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None
    workers: PositiveInt | None = None
    scheduler: str | None = None
    map_mode_rates: bool = False

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value):
        return _check_scheduler(value)

    @model_validator(mode="after")
    def _grid(self):
        if self.grid is None:
            return self
        if set(self.grid) != set(self.free):
            raise ValueError(f"grid must give the step of both free parameters ({', '.join(self.free)}), "
                             f"got {', '.join(self.grid) or 'none'}")
        if "map_points" in self.model_fields_set:
            raise ValueError("map_points is the resolution of the map on levels; with grid the grid steps set it:"
                             " remove one of them")
        for name, step in self.grid.items():
            if self.range and name in self.range:
                lo, hi = self.range[name]
                count = (hi - lo) / step
                if abs(count - round(count)) > 1e-9 * max(1.0, count):
                    raise ValueError(f"grid: the step {step:g} of {name} does not divide its range [{lo:g}, {hi:g}]")
        return self


class NeutralStep(_Continuation):
    kind: Literal["neutral"]
    free: Free
    levels: PositiveInt | Annotated[list[Number], Field(min_length=1)] = 21


class Shooting(_Strict):
    """Numerics of an oscillatory pattern (``bifnet.patterns.cycles.CycleSettings``)."""

    dt: Positive | None = None
    method: Literal["monodromy", "krylov"] | None = None
    first_amplitude: Positive | None = None
    check_return: bool | None = None
    return_tolerance: Positive | None = None
    multipliers: Annotated[int, Field(ge=1)] | None = None
    newton_iterations: Annotated[int, Field(ge=1)] | None = None
    tolerance: Positive | None = None
    verification_budget: Annotated[int, Field(ge=0)] | None = None


class PatternStep(_Step):
    kind: Literal["pattern"]
    start: Union[str, dict[str, Number]]
    free: Free | None = None
    range: dict[str, Pair] | None = None
    settings: Settings | None = None
    parameters: Parameters | None = None
    observe: str | None = None
    brain_points: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = None
    plot: Any = None
    shooting: Shooting | None = None


class PatternCurveStep(_Step):
    kind: Literal["pattern_curve"]
    start: str
    free: Annotated[list[str], Field(min_length=2, max_length=2)]
    range: dict[str, Pair] | None = None
    settings: Settings | None = None
    levels: list[Number] = []


class _Network(_Step):
    parameters: Parameters | None = None
    variable: str | None = None


class _Simulation(_Network):
    t_max: Positive = 1000.0
    dt: Positive = 0.01
    method: Literal["rk4", "dopri5"] = "rk4"
    stride: PositiveInt = 10
    rtol: Positive = 1e-6
    atol: Positive = 1e-9
    perturbation: Literal["random", "mode", "none"] = "random"
    amplitude: NonNegative = 1e-3
    mode: PositiveInt = 2
    seed: Annotated[int, Field(ge=0)] | None = None
    noise: NonNegative | list[NonNegative] | list[list[NonNegative]] = 0.0  # scalar, per variable, per component
    initial: Literal["equilibrium", "default"] = "equilibrium"
    animate: bool = False

    @model_validator(mode="after")
    def _samples(self):
        samples = int(self.t_max / (self.dt * self.stride) + 1e-9) + 1
        if self.dt > self.t_max:
            raise ValueError(f"dt = {self.dt} is longer than t_max = {self.t_max}")
        if samples < 2:
            raise ValueError(f"stride = {self.stride} with dt = {self.dt} keeps fewer than two samples of"
                             f" t_max = {self.t_max} ms: lower stride or raise t_max")
        if self.t_max / self.dt > 2e9:
            raise ValueError(f"t_max / dt = {self.t_max / self.dt:.3g} steps is too many")
        steps = self.t_max / self.dt
        if self.method == "rk4" and abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            raise ValueError(f"t_max = {self.t_max} is not a whole number of rk4 steps dt = {self.dt}")
        if self.method == "dopri5" and np.any(np.asarray(self.noise, dtype=object) != 0):
            raise ValueError("noise needs method = \"rk4\" (dopri5 is adaptive)")
        return self


class SimulateStep(_Simulation):
    kind: Literal["simulate"]


class ValidateStep(_Network):
    kind: Literal["validate"]
    mode: PositiveInt | None = None
    amplitude: Positive = 1e-7
    t_max: Positive | None = None
    dt: Positive = 0.01
    linear_limit: Positive = 1e-4


class LyapunovStep(_Network):
    kind: Literal["lyapunov"]
    k: PositiveInt | None = None
    t_max: Positive = 2000.0
    transient: NonNegative = 300.0
    dt: Positive = 0.01
    renormalise_every: Positive = 1.0
    precision: Literal["double", "single"] = "double"
    method: Literal["rk4", "dopri5"] = "rk4"
    rtol: Positive = 1e-6
    atol: Positive = 1e-9
    tangent_error: bool = False
    homogeneous: bool = False
    initial: Literal["equilibrium", "default"] = "equilibrium"
    amplitude: NonNegative = 1e-3
    seed: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _after(self):
        if self.dt > self.t_max:
            raise ValueError(f"dt = {self.dt} is longer than t_max = {self.t_max}")
        return self


class SpectrumStep(_Simulation):
    kind: Literal["spectrum"]
    t_max: Positive = 2200.0
    transient: NonNegative = 200.0
    phase_band: Pair = [4.0, 8.0]
    amplitude_band: Pair = [30.0, 80.0]
    n_surrogates: Annotated[int, Field(ge=0)] = 200

    @model_validator(mode="after")
    def _bands(self):
        for name in ("phase_band", "amplitude_band"):
            lo, hi = getattr(self, name)
            if not 0 < lo < hi:
                raise ValueError(f"{name} needs 0 < low < high, got [{lo}, {hi}]")
        if self.transient >= self.t_max:
            raise ValueError(f"transient = {self.transient} leaves nothing of t_max = {self.t_max}")
        return self


class SweepStep(_GridMixin, _Network):
    kind: Literal["sweep"]
    grid: Annotated[dict[str, GridAxis], Field(min_length=1)]
    analysis: Literal["lyapunov", "dispersion"] = "lyapunov"
    network: bool = False
    k: PositiveInt | None = None
    t_max: Positive = 2000.0
    transient: NonNegative = 500.0
    dt: Positive = 0.01
    precision: Literal["double", "single"] = "double"
    method: Literal["rk4", "dopri5"] = "rk4"
    rtol: Positive = 1e-6
    atol: Positive = 1e-9
    tangent_error: bool = False
    threads: PositiveInt = 1
    amplitude: NonNegative = 0.0
    seed: Annotated[int, Field(ge=0)] | None = None
    workers: PositiveInt | None = None
    scheduler: str | None = None
    progress: bool = True
    vectorise: bool | None = None
    batch_size: PositiveInt | None = None

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value):
        return _check_scheduler(value)

    @model_validator(mode="after")
    def _vectorised(self):
        eligible = self.analysis == "lyapunov" and not self.network
        if self.vectorise and not eligible:
            raise ValueError('vectorise = true needs analysis = "lyapunov" on the homogeneous system (network = false)')
        if self.vectorise and self.precision != "double":
            raise ValueError(f"vectorise = true computes in double precision; remove precision = {self.precision!r}"
                             " or set vectorise = false")
        vectorised = self.vectorise if self.vectorise is not None else eligible and self.precision == "double"
        if self.batch_size is not None and not vectorised:
            raise ValueError("batch_size applies to the vectorised homogeneous Lyapunov sweep only")
        return self


STEP_MODELS: dict[str, type[_Step]] = {
    "equilibria": EquilibriaStep, "cycles": CyclesStep, "curve": CurveStep,
    "dispersion": DispersionStep, "transverse": TransverseStep, "neutral": NeutralStep,
    "pattern": PatternStep, "pattern_curve": PatternCurveStep,
    "simulate": SimulateStep, "validate": ValidateStep, "lyapunov": LyapunovStep,
    "spectrum": SpectrumStep, "sweep": SweepStep,
}


def _check_scheduler(value):
    if value is None or value in ("processes", "serial"):
        return value
    if not isinstance(value, str) or "://" not in value or value.endswith("://"):
        raise ValueError(f"must be \"processes\", \"serial\" or a Dask address like \"tcp://host:8786\","
                         f" got {value!r}")
    return value


# ---------------------------------------------------------------------------
# the top level

class ConnectomeOptions(_Strict):
    drop_self_loops: bool | None = None
    drop_regions: list[int | str] | None = None
    drop_zero_rows: bool | None = None
    key: str | None = None
    symmetrize: bool | None = None  # issue 10


class Dask(_Strict):
    scheduler: str | None = None

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value):
        return _check_scheduler(value)


class RunFileModel(_Strict):
    model: Annotated[str, Field(min_length=1)]
    connectome: Annotated[str, Field(min_length=1)] | None = None
    connectome_options: ConnectomeOptions | None = None
    parameters: Parameters | None = None
    settings: Settings | None = None
    steps: Annotated[list[dict[str, Any]], Field(min_length=1)]
    title: str | None = None
    description: str | None = None
    seed: Annotated[int, Field(ge=0)] | None = None
    dask: Dask | None = None


TOP_LEVEL_KEYS = frozenset(RunFileModel.model_fields)
_MODEL_CLASSES = (GridRange, Settings, ConnectomeOptions, Dask, RunFileModel, *STEP_MODELS.values())


# ---------------------------------------------------------------------------
# checking and messages

def _where(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _non_finite(value, loc=()):
    if isinstance(value, float) and not math.isfinite(value):
        return loc, value
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, (*loc, key))
        if found:
            return found
    return None


def _message(error: ValidationError, model: type[BaseModel], prefix: str, data) -> str:
    first = error.errors(include_url=False)[0]
    tags = {"str", "int", "float", "bool", "list", "dict"} | {m.__name__ for m in _MODEL_CLASSES}
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p in tags)))
    where = _where(loc) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        container = model
        for part in loc[:-1]:
            field = getattr(container, "model_fields", {}).get(part) if isinstance(part, str) else None
            annotation = getattr(field, "annotation", None)
            for arg in typing.get_args(annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    annotation = arg
            container = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if container is None:
                break
        known = sorted(getattr(container, "model_fields", {}) or [])
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        tail = f"; did you mean {hint[0]!r}?" if hint else (f" (known: {', '.join(known)})" if known else "")
        return f"{prefix}{where}: unknown key {loc[-1]!r}{tail}"
    if kind == "missing":
        return f"{prefix}{where}: missing (required)"
    message = first["msg"].removeprefix("Value error, ")
    message = re.sub(r"a valid dictionary( or instance of \w+)?", "a table", message)
    message = message.replace("a valid list", "an array [...]")
    got = first.get("input")
    if kind.endswith("_type") or kind in ("literal_error", "string_pattern_mismatch", "greater_than",
                                          "greater_than_equal", "less_than_equal", "too_short", "too_long"):
        shown = repr(got)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"{prefix}{where}: {message[:1].lower() + message[1:]}, got {shown}"
    return f"{prefix}{where}: {message}"


def validate_run_data(data: dict, *, where: str = "") -> dict:
    """Check a run file's data (``--set`` applied); return it unchanged.

    Raises
    ------
    RunFileError
        One line: the key's TOML path and what is wrong with it.
    """
    prefix = f"{where}: " if where else ""
    found = _non_finite(data)
    if found:
        loc = found[0]
        label = _where(loc)
        if len(loc) > 2 and loc[0] == "steps" and isinstance(data["steps"][loc[1]], dict) \
                and isinstance(data["steps"][loc[1]].get("name"), str):
            label = f"step {data['steps'][loc[1]]['name']!r}: {_where(loc[2:])}"
        raise RunFileError(f"{prefix}{label}: {found[1]} is not a finite number (NaN and inf are refused)")
    try:
        RunFileModel.model_validate(data)
    except ValidationError as error:
        raise RunFileError(_message(error, RunFileModel, prefix, data)) from None
    names: list[str] = []
    labels = []
    for i, step in enumerate(data["steps"]):  # the structure first: names, kinds, references
        label = f"steps[{i}]"
        if not isinstance(step, dict):
            raise RunFileError(f"{prefix}{label}: a step must be a table")
        kind, name = step.get("kind"), step.get("name")
        if not isinstance(name, str) or not name:
            raise RunFileError(f"{prefix}{label}: needs a name (name = \"eq\")")
        label = f"step {name!r}"
        if kind not in STEP_MODELS:
            hint = difflib.get_close_matches(str(kind), STEP_MODELS, n=1)
            raise RunFileError(f"{prefix}{label}: unknown kind {kind!r}"
                               + (f"; did you mean {hint[0]!r}?" if hint else f" (known: {', '.join(STEP_MODELS)})"))
        if name in names:
            raise RunFileError(f"{prefix}two steps are called {name!r}")
        start = step.get("start")
        if isinstance(start, str):
            ref, sep, point = start.partition(":")
            if not sep or not point:
                raise RunFileError(f"{prefix}{label}: start must look like \"eq:HB1\" or \"eq:HB\", got {start!r}")
            if ref not in names:
                raise RunFileError(f"{prefix}{label}: starts from {start!r} but no earlier step is called {ref!r}")
        names.append(name)
        labels.append(label)
    for step, label in zip(data["steps"], labels):  # then every key of every step
        model = STEP_MODELS[step["kind"]]
        try:
            model.model_validate(step)
        except ValidationError as error:
            raise RunFileError(_message(error, model, f"{prefix}{label}: ", step).replace(": (top level)", "")) from None
    return data


def json_schema() -> dict:
    """The JSON Schema of a run file (steps as a union over their kinds)."""
    schema = RunFileModel.model_json_schema()
    steps = {kind: model.model_json_schema(ref_template="#/$defs/{model}") for kind, model in STEP_MODELS.items()}
    defs = schema.setdefault("$defs", {})
    refs = []
    for kind, sub in steps.items():
        defs.update(sub.pop("$defs", {}))
        defs[STEP_MODELS[kind].__name__] = sub
        refs.append({"$ref": f"#/$defs/{STEP_MODELS[kind].__name__}"})
    schema["properties"]["steps"] = {"type": "array", "minItems": 1, "items": {"oneOf": refs},
                                     "description": "the [[steps]] array; each step's kind selects its keys"}
    schema["title"] = "bifnet run file"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    json.dump(json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
