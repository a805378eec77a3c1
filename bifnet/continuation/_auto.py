"""The one place that knows AUTO-07p (through bifpy).

Everything AUTO-specific lives here: 1-based PAR slots and the reserved
slots 11-14, the translation of :class:`ContinuationSettings` into AUTO
constants, transpiled callbacks with AUTO's analytic Jacobian, and the
conversion of bifpy results into :class:`~bifnet.continuation.branch.Branch`.

bifpy workarounds (see docs/engine.md):

* ``SolutionPoint.state`` holds at most 6 components; we read
  ``extended_state`` / the periodic orbit instead.
* On a closed cycle branch AUTO keeps going round until ``NMX``; we cut the
  branch where it returns to a Hopf point (amplitude zero) or to its start.
* AUTO reports "FOLD" where a cycle branch reaches a Hopf point; those are not
  folds of cycles and are dropped.
* bifpy 0.3.0 traces callbacks with ``math``'s functions replaced process-wide
  (``_patched_math``), which is not thread-safe; bifnet's callbacks never call
  ``math``, so they are traced without it.
* bifpy 0.3.0 wraps every mesh row of every periodic orbit (and of its
  tangent) in a ``NamedValues`` after each run: 1.3 million Python calls, a
  fifth of a cycle run at NTST 250. bifnet reads orbits as plain numbers only,
  so orbits keep bifpy's parsed tuples (:func:`_install_plain_orbits`).
* bifpy 0.3.0 reads each number of fort.8 through a Python function call (9.4
  million calls, 11 s of a 125 s doubled branch at NTST 250); bifnet reads the
  records' numbers with numpy and hands bifpy the same record
  (:func:`_install_fast_fort8`).
* bifpy 0.3.0 copies each labelled point's fort.8 header with
  ``dataclasses.asdict``, which deep-copies every tuple number by number (550
  000 Python calls, 9 % of the transverse curves of 8 modes); the fields are
  immutable, so bifnet hands over the same values without the copy
  (:func:`_install_shallow_metadata`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
from typing import Mapping, Sequence

import numpy as np
import sympy

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind, SpecialPoint
from bifnet.continuation.settings import ContinuationSettings
from bifnet.errors import ContinuationError
from bifnet.systems import SymbolicSystem

log = logging.getLogger("bifnet.continuation")

PERIOD_SLOT = 11
_RESERVED_SLOTS = frozenset({11, 12, 13, 14})
_MAX_SLOT = 36


def _auto():
    try:
        from bifpy import auto
    except ImportError as error:  # pragma: no cover - install problem
        raise ContinuationError(f"the continuation engine bifpy is not installed ({error}); run `make install`") from None
    _install_transpile_cache()
    _install_plain_orbits()
    _install_fast_fort8()
    _install_shallow_metadata()
    _install_picklable_names()
    if "watchdog" not in _cache_state:  # after the cache: it wraps bifpy's subprocess module last
        from bifpy.auto import _process

        from bifnet.continuation import _watchdog

        cache_folder = getattr(_process.subprocess, "_folder", None)
        if cache_folder is not None:  # the gfortran cache goes too if this process is killed
            _watchdog.guard_folder(str(cache_folder))
        _cache_state["watchdog"] = _watchdog.install(_process)
    return auto


def _reduce_named_values(values):
    return type(values), (tuple(values), tuple(values.names))


def _install_picklable_names() -> None:
    """Make bifpy's ``NamedValues`` (a tuple subclass whose ``__new__`` takes ``values, names``)
    survive pickling. Without this a branch sent back from a pool worker fails to unpickle in the
    parent (``NamedValues.__new__() missing 1 required positional argument: 'names'``) and
    ``concurrent.futures`` reports the pool as broken (``BrokenProcessPool``)."""
    if "picklable_names" in _cache_state:
        return
    import copyreg

    try:
        from bifpy.results import NamedValues
    except ImportError:  # pragma: no cover - another bifpy layout
        _cache_state["picklable_names"] = False
        return
    copyreg.pickle(NamedValues, _reduce_named_values)
    _cache_state["picklable_names"] = True


def _install_plain_orbits() -> None:
    """Skip bifpy's naming of orbit mesh rows (see the module docstring).

    Only for the checked bifpy version; point parameters and states keep
    their names. Restarts write orbits back from the same numbers."""
    if "plain_orbits" in _cache_state:
        return
    _cache_state["plain_orbits"] = False
    from importlib import metadata

    from bifpy.auto import _process

    if metadata.version("bifpy") != _CHECKED_BIFPY or not hasattr(_process, "_named_orbit"):
        return
    _process._named_orbit = lambda orbit, parnames, unames: orbit
    _cache_state["plain_orbits"] = True


def _install_fast_fort8() -> None:
    """Read fort.8's periodic-orbit records with numpy (see the module docstring).

    The record is the one bifpy builds, value for value (``tests/test_continuation.py`` compares them on
    a real fort.8); any record the fast path cannot read exactly as bifpy would (a number AUTO wrote
    without its ``E``, a body of unexpected length) goes to bifpy's own reader."""
    if "fast_fort8" in _cache_state:
        return
    _cache_state["fast_fort8"] = False
    from importlib import metadata

    from bifpy.auto import _parsing

    if metadata.version("bifpy") != _CHECKED_BIFPY or not hasattr(_parsing, "_Fort8MeshRecord"):
        return
    original = _parsing._read_fort8_bvp_family_record

    def read_record(lines, start):
        record = _fast_fort8_record(lines, start, _parsing)
        return record if record is not None else original(lines, start)

    _parsing._read_fort8_bvp_family_record = read_record
    _cache_state["fast_fort8"] = original  # bifpy's reader (the tests compare the two)


def _install_shallow_metadata() -> None:
    """bifpy's ``_metadata_fields`` without the deep copy (see the module docstring): the same field
    names and equal values (its fields are numbers, tuples of numbers and None)."""
    if "shallow_metadata" in _cache_state:
        return
    _cache_state["shallow_metadata"] = False
    from importlib import metadata

    from bifpy.auto import _parsing

    if (metadata.version("bifpy") != _CHECKED_BIFPY or not hasattr(_parsing, "_metadata_fields")
            or not hasattr(_parsing, "_METADATA_FIELD_NAMES")):
        return
    original = _parsing._metadata_fields
    names = _parsing._METADATA_FIELD_NAMES

    def fields(record):
        if record is None:
            return dict.fromkeys(names)
        return {name: getattr(record, name) for name in names}

    _parsing._metadata_fields = fields
    _cache_state["shallow_metadata"] = original  # bifpy's copy (the tests compare the two)


def _fast_fort8_record(lines, start, parsing):
    """``(record, next line)`` of the fort.8 record at ``lines[start]``, or None to let bifpy read it.

    Header (16 integers): IBR MTOT ITP LAB NFPR ISW NTPL NAR NROWPR NTST NCOL NPAR NPARI NDM IPS IPRIV;
    body (NROWPR lines): NTPL rows of NAR numbers (time, state), then optionally NFPR parameter indices,
    NFPR parameter tangents and NTPL rows of NAR - 1 state tangents, then NPAR parameters."""
    from bifpy import results

    head = lines[start].split()
    if len(head) != 16:
        return None
    try:
        h = [int(v) for v in head]
    except ValueError:
        return None
    nfpr, ntpl, nar, nrows, npar = h[4], h[6], h[7], h[8], h[11]
    body = lines[start + 1:start + 1 + nrows]
    if len(body) != nrows:
        return None
    try:
        values = np.array(" ".join(body).split(), dtype=float)
    except ValueError:  # e.g. "2.22507-308": bifpy's reader knows that form
        return None
    mesh = ntpl * nar
    ndim = nar - 1
    tangent_count = 2 * nfpr + ndim * ntpl
    if values.size not in (mesh + npar, mesh + tangent_count + npar):
        return None
    rows = values[:mesh].reshape(ntpl, nar)
    tangent = None
    if values.size == mesh + tangent_count + npar:
        middle = values[mesh:mesh + tangent_count]
        tangent = results.PeriodicOrbitTangent(
            active_parameters=tuple(int(v) for v in middle[:nfpr]),
            parameters=tuple(middle[nfpr:2 * nfpr].tolist()),
            state=tuple(map(tuple, middle[2 * nfpr:].reshape(ntpl, ndim).tolist())))
    record = parsing._Fort8MeshRecord(
        branch_number=h[0], point_number=h[1], point_type_code=h[2], label=h[3], active_parameter_count=nfpr,
        isw=h[5], mesh_point_count=ntpl, values_per_mesh_point=nar, restart_record_row_count=nrows,
        mesh_interval_count=h[9], collocation_points_per_interval=h[10], all_parameters_declared_count=npar,
        internal_parameter_count=h[12], original_dimension=h[13], ips=h[14], toolbox_private_field=h[15],
        normalized_time=tuple(rows[:, 0].tolist()), state=tuple(map(tuple, rows[:, 1:].tolist())),
        tangent=tangent, all_parameters=tuple(values[values.size - npar:].tolist()))
    return record, start + 1 + nrows


# ---------------------------------------------------------------------------
# A cache for bifpy's transpiled path.
#
# bifpy 0.3.0 traces the model with sympy, derives the Jacobian, writes Fortran,
# compiles and links it on every run and restart (about 0.14 s + 0.12 s here),
# although a restart of the same system with the same free parameters produces
# the same source every time. We memoise the generated model source per
# callback object and free parameters (for a cold start only the traced
# starting point is spliced in), and gfortran's outputs by the hash of their
# inputs, in a per-process folder. Both hooks touch only
# bifpy.auto._process, and only for the pinned bifpy version they were checked
# against.

_CHECKED_BIFPY = "0.3.0"
_cache_state: dict = {}


class _CachingSubprocess:
    """Stands in for the ``subprocess`` module inside bifpy.auto._process:
    ``gfortran`` compile and link commands are answered from a cache."""

    def __init__(self, real, folder):
        self._real = real
        self._folder = folder

    def __getattr__(self, name):
        return getattr(self._real, name)

    def run(self, args, **kwargs):
        import hashlib
        import pathlib

        if not (isinstance(args, list) and args and args[0] == "gfortran" and "-o" in args):
            return self._real.run(args, **kwargs)
        target = pathlib.Path(args[args.index("-o") + 1])
        inputs = [a for a in args[1:] if a != target.as_posix() and not a.startswith("-")
                  and pathlib.Path(a).is_file()]
        digest = hashlib.sha256(" ".join(args[:1] + [a for a in args[1:] if a.startswith("-")]).encode())
        for name in inputs:
            digest.update(pathlib.Path(name).read_bytes())
        cached = self._folder / (digest.hexdigest() + target.suffix)
        if cached.exists():
            shutil.copy2(cached, target)
            return self._real.CompletedProcess(args, 0, "", "")
        result = self._real.run(args, **kwargs)
        if result.returncode == 0 and target.exists():  # atomically: another thread may read it
            import tempfile

            fd, tmp = tempfile.mkstemp(dir=self._folder, suffix=".part")
            os.close(fd)
            shutil.copy2(target, tmp)
            os.replace(tmp, cached)
        return result


def _install_transpile_cache() -> None:
    if _cache_state:
        return
    _cache_state["installed"] = False
    try:
        import atexit
        import subprocess
        import tempfile
        from importlib import metadata
        from pathlib import Path

        from bifpy.auto import _process, _transpile

        if metadata.version("bifpy") != _CHECKED_BIFPY:
            log.debug("bifpy %s: transpile cache not installed (checked with %s)",
                      metadata.version("bifpy"), _CHECKED_BIFPY)
            return
        folder = Path(tempfile.mkdtemp(prefix="bifnet-gfortran-"))
        atexit.register(shutil.rmtree, folder, True)
        _process.subprocess = _CachingSubprocess(subprocess, folder)
        original = _transpile.generate_equation_file
        sources: dict = {}

        header = "      DOUBLE PRECISION, INTENT(IN) :: T\n"
        footer = "      END SUBROUTINE STPNT"

        def generate_equation_file(func, stpnt, ndim, **kwargs):
            if any(kwargs.get(k) is not None for k in ("bcnd", "icnd", "fopt")):
                return original(func, stpnt, ndim, **kwargs)
            key = (id(func), ndim, repr(sorted((k, repr(v)) for k, v in kwargs.items())))
            hit = sources.get(key)
            if hit is None or hit[0] is not func:
                hit = (func, original(func, None, ndim, **kwargs))
                sources[key] = hit
            source = hit[1]
            if stpnt is None:
                return source
            # a cold start: only the starting point differs; trace just that
            body = _transpile._indent(_transpile._trace_stpnt_body(stpnt, ndim, kwargs.get("stpnt_state_length")))
            start = source.index(header) + len(header)
            end = source.index(footer, start)
            return source[:start] + body + "\n" + source[end:]

        _transpile.generate_equation_file = generate_equation_file
        # bifpy traces a callback inside _patched_math(), which replaces math.exp & co. process-wide
        # with wrappers; the cycles step traces on several threads, so one thread restored another's
        # wrappers as the "originals", and numba, compiling a kernel meanwhile, found math.exp to be
        # bifpy.auto._transpile.wrapper ("module has no attribute 'wrapper'", the run lost). bifnet's
        # callbacks are numpy lambdas that never call the math module: trace without the patch.
        _transpile._patched_math = contextlib.nullcontext
        _cache_state["installed"] = True
    except Exception as error:  # pragma: no cover - never let the cache break a run
        log.debug("transpile cache not installed: %s", error)


def parameter_slots(names: Sequence[str]) -> dict[str, int]:
    """Map parameter names to AUTO PAR slots (1-based), skipping 11-14."""
    slots = [s for s in range(1, _MAX_SLOT + 1) if s not in _RESERVED_SLOTS]
    if len(names) > len(slots):
        raise ContinuationError(f"AUTO-07p holds at most {len(slots)} parameters, the system has {len(names)}")
    return dict(zip(names, slots))


@dataclasses.dataclass(frozen=True, eq=False)
class AutoProblem:
    """A symbolic system prepared for AUTO: slots and a traceable callback."""

    system: SymbolicSystem
    slots: Mapping[str, int]

    @functools.cached_property
    def func(self):
        system = self.system
        order = [self.slots[n] - 1 for n in system.parameter_names]
        evaluate = sympy.lambdify([list(system.state), list(system.parameters)], list(system.rhs),
                                  modules="numpy", cse=True)

        def func(state, parameters):
            return evaluate(state, [parameters[i] for i in order])

        return func

    @property
    def npar(self) -> int:
        return max(max(self.slots.values()), PERIOD_SLOT)

    @property
    def parnames(self) -> dict[int, str]:
        return {slot: name for name, slot in self.slots.items()}

    def parameter_vector(self, values: Mapping[str, float]) -> np.ndarray:
        par = np.zeros(_MAX_SLOT)
        for name, slot in self.slots.items():
            par[slot - 1] = values[name]
        return par


@functools.lru_cache(maxsize=None)
def auto_problem(system: SymbolicSystem) -> AutoProblem:
    """The (memoised) AUTO problem of a system."""
    return AutoProblem(system, parameter_slots(system.parameter_names))


def auto_constants(settings: ContinuationSettings, *, ips: int, ndim: int, npar: int,
                   principal: str | None, ds: float | None = None) -> dict:
    """Translate :class:`ContinuationSettings` into AUTO-07p constants."""
    auto = _auto()
    from bifnet.continuation.settings import MAX_STEP_FRACTION

    lo, hi = settings.bounds.get(principal, (-1e300, 1e300)) if principal else (-1e300, 1e300)
    periodic = ips == auto.IPS_PERIODIC_ORBIT
    step = settings.ds if ds is None else ds
    ds_max = settings.ds_max
    width = hi - lo
    if np.isfinite(width) and width < 1e299:
        # a step larger than a fraction of the range skips over bifurcations
        ds_max = min(ds_max, MAX_STEP_FRACTION * width)
        step = float(np.sign(step)) * min(abs(step), ds_max)
    ds_min = min(settings.ds_min, ds_max)
    return dict(
        ips=ips, ndim=ndim, npar=npar, nmx=settings.max_steps,
        npr=settings.save_every,
        ntst=settings.ntst, ncol=settings.ncol, iad=3,
        ilp=1, isp=2 if (settings.detect_cycle_bifurcations or not periodic) else 1,
        iads=1, itmx=9, itnw=7, nwtn=3, jac=1,
        ds=step, dsmin=ds_min, dsmax=ds_max,
        rl0=lo, rl1=hi, a0=-1e300, a1=1e300,
        epsl=settings.tolerance, epsu=settings.tolerance, epss=1e-6,
    )


def _uzstop(problem: AutoProblem, free: Sequence[str], settings: ContinuationSettings, periodic: bool) -> dict:
    stops: dict[int, list[float]] = {}
    for name in free[1:]:
        if name in settings.bounds:
            stops[problem.slots[name]] = list(settings.bounds[name])
    if periodic:
        stops[PERIOD_SLOT] = [settings.max_period]
    return stops


def _call(fn, *args, **kwargs):
    """One bifpy call under the watchdog (see :mod:`bifnet.continuation._watchdog`): every
    ``bifpy-*`` folder it made is removed, except the output folder of an AUTO failure."""
    from bifnet.continuation import _watchdog

    auto = _auto()
    tracker = _cache_state["watchdog"]
    start, keep = len(tracker.made), None
    try:
        return fn(*args, **kwargs)
    except auto.AutoError as error:
        keep = getattr(error, "output_directory", None)
        raise ContinuationError(f"AUTO-07p failed: {str(error).splitlines()[0]}", keep) from None
    except auto.TranspileError as error:
        raise ContinuationError(f"the model cannot be compiled for AUTO-07p: {error}") from None
    finally:
        _watchdog.cleanup(tracker, start, keep)


def run_equilibria(problem: AutoProblem, x0: np.ndarray, parameters: Mapping[str, float],
                   free: Sequence[str], settings: ContinuationSettings, ds: float):
    """Continue equilibria from ``x0`` in ``free``: one bifpy run."""
    auto = _auto()
    par0 = problem.parameter_vector(parameters)
    x0 = np.asarray(x0, dtype=float)

    def stpnt(state, par, t):
        state[:] = x0
        par[:] = par0

    constants = auto_constants(settings, ips=auto.IPS_EQUILIBRIUM, ndim=problem.system.dimension,
                               npar=problem.npar, principal=free[0], ds=ds)
    icu = [problem.slots[n] for n in free]
    return _call(auto.run, problem.func, stpnt, constants, icu=icu, transpile=True,
                 jac=auto.AUTO_JACOBIAN, uzstop=_uzstop(problem, free, settings, False) or None)


def restart(problem: AutoProblem, point, free: Sequence[str], settings: ContinuationSettings, *,
            ips: str, source_ips: str, switch: str, ds: float, with_period: bool):
    """Restart AUTO from a labelled bifpy point.

    ``ips``/``source_ips``: ``"EP"`` or ``"LC"``; ``switch``: ``"hopf"``
    (onto cycles), ``"locus"`` (two-parameter continuation), ``"branch"``
    (branch switching at BP/PD) or ``"continue"`` (same branch).
    """
    auto = _auto()
    kinds = {"EP": auto.IPS_EQUILIBRIUM, "LC": auto.IPS_PERIODIC_ORBIT}
    isw = {"hopf": auto.ISW_HOPF_TO_PERIODIC_ORBIT, "locus": auto.ISW_SPECIAL_POINT_LOCUS,
           "branch": -1, "continue": 1}[switch]
    constants = auto_constants(settings, ips=kinds[ips], ndim=problem.system.dimension,
                               npar=problem.npar, principal=free[0], ds=ds)
    if ips == "LC" and switch == "locus":
        # profiles of the extended system are not needed on a cycle locus and
        # writing/parsing them for every point dominated the run time
        constants["npr"] = settings.max_steps
    icu = [problem.slots[n] for n in free]
    if with_period:
        icu.append(PERIOD_SLOT)
    return _call(auto.restart, problem.func, constants, point, icu=icu, isw=isw,
                 source_ips=kinds[source_ips], transpile=True, jac=auto.AUTO_JACOBIAN,
                 uzstop=_uzstop(problem, free, settings, ips == "LC") or None)


# ---------------------------------------------------------------------------
# bifpy result -> Branch

_TYPE_MAP = {
    "BRANCH_POINT": SpecialKind.BP,
    "HOPF_BIFURCATION": SpecialKind.HB,
    "PERIOD_DOUBLING": SpecialKind.PD,
    "TORUS": SpecialKind.NS,
    "BOGDANOV_TAKENS": SpecialKind.BT,
    "CUSP": SpecialKind.CP,
    "ZERO_HOPF": SpecialKind.ZH,
    "GENERALIZED_HOPF": SpecialKind.GH,
    "FOLD_FLIP": SpecialKind.LPPD,
    "FOLD_TORUS": SpecialKind.LPNS,
    "FLIP_TORUS": SpecialKind.PDNS,
    "TORUS_TORUS": SpecialKind.NSNS,
    "RESONANCE_1_1": SpecialKind.R1,
    "RESONANCE_1_2": SpecialKind.R2,
    "RESONANCE_1_3": SpecialKind.R3,
    "RESONANCE_1_4": SpecialKind.R4,
    "ABNORMAL_TERMINATION": SpecialKind.MX,
}


def _point_kind(point, branch_kind: BranchKind) -> SpecialKind | None:
    name = point.point_type.name
    if name == "FOLD":
        if branch_kind is BranchKind.LOCUS:
            return None  # a turning point of the curve, not a bifurcation
        return SpecialKind.LPC if branch_kind is BranchKind.CYCLES else SpecialKind.LP
    return _TYPE_MAP.get(name)


def _stability(point) -> int:
    name = point.stability.name
    return {"STABLE": 1, "UNSTABLE": 0}.get(name, -1)


def _full_state(point, ndim: int) -> np.ndarray:
    state = point.extended_state if point.extended_state is not None else tuple(point.state)
    state = np.asarray(state, dtype=float)
    if state.size < ndim:
        state = np.concatenate([state, np.full(ndim - state.size, np.nan)])
    return state[:ndim]


def _param(point, slot: int, name: str | None = None) -> float:
    """PAR(slot) of a point: from all parameters when labelled, else by name."""
    if point.all_parameters is not None:
        return float(point.all_parameters[slot - 1])
    for key in (f"PAR({slot})", name):
        try:
            return float(point.parameters[key])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    return float("nan")


def convert_branch(raw_branches, problem: AutoProblem, *, kind: BranchKind, name: str,
                   free: Sequence[str], parameters: Mapping[str, float], reverse_first: bool = False,
                   origin=None, locus_of=None, mode: int = 1, Lambda: complex = 1.0,
                   state_slice: slice | None = None) -> Branch:
    """Turn bifpy branches (one direction each) into one :class:`Branch`.

    With two raw runs (backward and forward from one start), the first is
    reversed and the two joined so the branch reads in one direction.
    """
    system = problem.system
    ndim = system.dimension
    names = system.state_names if state_slice is None else system.state_names[state_slice]
    sl = state_slice or slice(None)
    runs = [list(points) for points in raw_branches]
    if reverse_first and len(runs) == 2:
        runs = [runs[0][::-1][:-1], runs[1]]  # both start at the same point
    points = [p for run in runs for p in run]

    cols: dict[str, list] = {n: [] for n in free}
    if kind is BranchKind.CYCLES:
        cols["period"] = []
        for n in names:
            cols[f"{n}_min"] = []
            cols[f"{n}_max"] = []
    else:
        for n in names:
            cols[n] = []
        if kind is BranchKind.LOCUS:
            cols["period"] = []
    cols["stable"] = []
    cols["code"] = []
    cols["label"] = []

    specials = []
    counts: dict[SpecialKind, int] = {}
    engine_points = {}
    for i, p in enumerate(points):
        for n in free:
            cols[n].append(_param(p, problem.slots[n], n))
        if kind is BranchKind.CYCLES:
            cols["period"].append(_param(p, PERIOD_SLOT))
            orbit = p.periodic_orbit
            if orbit is not None:
                profile = np.asarray(orbit.state, dtype=float)[:, sl]
                times = np.asarray(orbit.normalized_time, dtype=float)
                lo, hi = orbit_extrema(times, profile)
            else:
                lo = hi = np.full(len(names), np.nan)
            for j, n in enumerate(names):
                cols[f"{n}_min"].append(lo[j])
                cols[f"{n}_max"].append(hi[j])
        else:
            st = _full_state(p, ndim)[sl]
            for j, n in enumerate(names):
                cols[n].append(st[j])
            if kind is BranchKind.LOCUS:
                cols["period"].append(_param(p, PERIOD_SLOT))
        cols["stable"].append(_stability(p))
        cols["code"].append(int(p.point_type_code))
        cols["label"].append(int(p.label))
        sk = _point_kind(p, kind)
        if p.is_labeled:
            engine_points[i] = p
        if sk is None:
            continue
        counts[sk] = counts.get(sk, 0) + 1
        if kind is BranchKind.CYCLES:
            eig = tuple(p.floquet_multipliers or ())
            state0 = tuple(np.asarray(p.periodic_orbit.state[0], dtype=float)[sl]) if p.periodic_orbit else ()
        else:
            eig = tuple(p.eigenvalues or ())
            state0 = tuple(_full_state(p, ndim)[sl])
        period = _param(p, PERIOD_SLOT) if kind is not BranchKind.EQUILIBRIA else float("nan")
        if kind is BranchKind.EQUILIBRIA:
            # AUTO prints eigenvalues to 6 digits; recompute them from the exact Jacobian
            values = {**parameters, **{n: _param(p, problem.slots[n], n) for n in free}}
            eig = tuple(_exact_eigenvalues(system, _full_state(p, ndim), values))
            if sk is SpecialKind.HB:
                period = _hopf_period(eig, _param(p, PERIOD_SLOT))
        specials.append(SpecialPoint(
            kind=sk, index=i, parameters={n: _param(p, problem.slots[n], n) for n in free},
            state=state0, label=int(p.label), code=int(p.point_type_code), eigenvalues=eig,
            period=period, located=sk is not SpecialKind.MX, name=f"{sk.value}{counts[sk]}",
            details={"reason": "the engine's corrector failed to converge here (AUTO MX): the branch ends"}
            if sk is SpecialKind.MX else {},
        ))
    columns = {k: np.asarray(v, dtype=float if k not in ("stable", "code", "label") else int) for k, v in cols.items()}
    return Branch(
        kind=kind, name=name, free=tuple(free), columns=columns, special_points=tuple(specials),
        parameters=dict(parameters), origin=origin, locus_of=locus_of, mode=mode, Lambda=Lambda,
        variables=tuple(names), engine={"problem": problem, "points": engine_points,
                                        "parameters": dict(parameters)},
    )


def _vertex(t, y, k):
    """Extremum of the parabola through points k-1, k, k+1 (periodic indices)."""
    n = len(t) - 1  # last mesh point repeats the first
    i0, i2 = (k - 1) % n, (k + 1) % n
    t0 = t[i0] - (1.0 if k == 0 else 0.0)
    t2 = t[i2] + (1.0 if k + 1 >= n else 0.0)
    t1 = t[k]
    y0, y1, y2 = y[i0], y[k], y[i2]
    d0, d2 = t0 - t1, t2 - t1
    denom = d0 * d2 * (d0 - d2)
    if denom == 0:
        return y1
    a = (d2 * (y0 - y1) - d0 * (y2 - y1)) / denom
    b = (d0 * d0 * (y2 - y1) - d2 * d2 * (y0 - y1)) / denom
    if a == 0:
        return y1
    s = -b / (2 * a)
    if not min(d0, d2) <= s <= max(d0, d2):
        return y1
    return y1 + b * s + a * s * s


def orbit_extrema(times: np.ndarray, profile: np.ndarray):
    """Minimum and maximum of each column of a periodic profile.

    The discrete extremum is refined by the vertex of the parabola through it
    and its two neighbours (error O(h^3) instead of O(h^2) on the mesh).
    """
    lo = np.empty(profile.shape[1])
    hi = np.empty(profile.shape[1])
    n = len(times) - 1
    for j in range(profile.shape[1]):
        y = profile[:, j]
        kmax, kmin = int(np.argmax(y[:n])), int(np.argmin(y[:n]))
        hi[j] = max(y[kmax], _vertex(times, y, kmax))
        lo[j] = min(y[kmin], _vertex(times, y, kmin))
    return lo, hi


def _exact_eigenvalues(system, state: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
    from bifnet.codegen import jacobian_function

    p = np.array([values[n] for n in system.parameter_names])
    ev = np.linalg.eigvals(jacobian_function(system)(state, p))
    return ev[np.argsort(-ev.real)]


def _hopf_period(eigenvalues, fallback: float) -> float:
    """``2 pi / omega`` from the critical pair (smallest |Re| with Im != 0)."""
    eig = np.asarray(eigenvalues, dtype=complex)
    eig = eig[np.abs(eig.imag) > 1e-12]
    if eig.size == 0:
        return fallback
    crit = eig[np.argmin(np.abs(eig.real))]
    return float(2 * np.pi / abs(crit.imag))


# ---------------------------------------------------------------------------
# long runs: chunks, and abnormal ends

#: AUTO's point-type code for a point where its corrector failed to converge even at DSMIN (MX).
ABNORMAL_END = -9
#: Abnormal ends a run is taken past at most.
MX_RECOVERIES = 4
#: Steps taken past an abnormal end at ``ds_max / MX_SMALL`` before the run goes on at ``ds_max / 10``.
MX_STEPS = 30
MX_SMALL = 100.0


def abnormal_end(points) -> bool:
    """Did the run end where AUTO's corrector failed (MX)?"""
    return bool(points) and int(points[-1].point_type_code) == ABNORMAL_END


def abnormal_end_status(runs, problem, free: Sequence[str]) -> str | None:
    """The status of a branch some of whose ``runs`` (lists of engine points) ended with MX, or None."""
    where = "; ".join(", ".join(f"{n} = {_param(r[-1], problem.slots[n]):.8g}" for n in free)
                      for r in runs if abnormal_end(r))
    return f"stopped: the engine's corrector failed at {where} (MX)" if where else None


def _direction_coordinates(point, problem, free, with_period) -> np.ndarray:
    values = [_param(point, problem.slots[n]) for n in free]
    if with_period:
        return np.array(values + [_param(point, PERIOD_SLOT)])
    return np.concatenate([values, _full_state(point, problem.system.dimension)])


def same_direction(before, last, after, problem, free, with_period) -> bool:
    """Does ``after`` continue the way ``before -> last`` went? Equilibria are compared in the
    parameters and the state (across a fold the parameter alone turns back), cycles in the parameters
    and the period."""
    a, b, c = (_direction_coordinates(p, problem, free, with_period) for p in (before, last, after))
    return bool(np.nansum((b - a) * (c - b)) > 0)


def _onward(problem, points, k, free, settings, *, ips, with_period, again="continue") -> list:
    """The points of a restart from ``points[k]`` that go on the way the branch came, its first (the start)
    left out; empty when neither direction does."""
    start = points[k]
    for step in (abs(settings.ds), -abs(settings.ds)):
        more = restart(problem, start, free, settings, ips=ips, source_ips=ips, switch=again, ds=step,
                       with_period=with_period)
        new = list(more.branches[0].points[1:]) if more.branches else []
        if not new or k == 0 or same_direction(points[k - 1], start, new[0], problem, free, with_period):
            return new
    return []


def _past_abnormal_end(problem, points, free, settings, *, ips, with_period, name):
    """Take a run that ended with MX past that point: from the last good point before it, with
    :data:`MX_STEPS` steps of ``ds_max /`` :data:`MX_SMALL`. Returns ``(points, used_all)`` (the branch
    up to the good point, then the small steps; ``used_all``: the small run took all its steps) or None
    when that does not get past the MX point either."""
    # the last good point: AUTO writes the MX row where the last converged step was, often twice
    failed = _direction_coordinates(points[-1], problem, free, with_period)
    k = len(points) - 2
    while k >= 0 and (not points[k].is_labeled or np.allclose(
            _direction_coordinates(points[k], problem, free, with_period), failed, rtol=1e-10, atol=1e-12)):
        k -= 1
    if k < 0:
        return None
    ds_max = max(settings.ds_max / MX_SMALL, settings.ds_min)
    local = settings.replace(ds=ds_max, ds_max=ds_max, max_steps=MX_STEPS)
    try:
        new = _onward(problem, points, k, free, local, ips=ips, with_period=with_period)
    except ContinuationError as error:
        log.debug("%s: restart past the abnormal end failed: %s", name, error)
        return None
    if len(new) < 2 or (abnormal_end(new) and len(new) < 3):
        return None
    log.info("%s: the engine's corrector failed at %s = %.8g (MX); went on from the point before with steps "
             "%g times smaller, then %g times", name, free[0], _param(points[-1], problem.slots[free[0]]),
             MX_SMALL, 10)
    return points[: k + 1] + new, len(new) >= local.max_steps - 1


def continue_in_chunks(problem, points, free, settings, *, chunk_steps, ips, with_period, done, name,
                       again="continue") -> list:
    """Continue a run's ``points`` with restarts until ``settings.max_steps``, a bound, or ``done(points)``.

    AUTO-07p cannot be told to stop when a closed branch returns to a Hopf
    point or a closed curve to its start, so branches run in chunks of
    ``chunk_steps`` steps; after each, ``done(points)`` is asked, and the run
    restarts from the last point when more is needed (each chunk reports progress).

    A run that ends where AUTO's corrector failed to converge (MX: a step
    that DSMIN could not save, e.g. just past a fold taken with a large
    ``ds_max``) does not end the branch: it is taken up again from the point
    before with :data:`MX_STEPS` steps of ``ds_max /`` :data:`MX_SMALL`, then
    goes on with ``ds_max / 10``; at most :data:`MX_RECOVERIES` times. A restart
    is kept only where it goes on the way the branch came (parameters and
    state, or period). Where that fails, the branch ends with its MX point
    (reported as not located, with the reason) and a warning.
    """
    new, recoveries, current = points, 0, settings
    while len(points) < settings.max_steps:
        if abnormal_end(points):
            if recoveries == MX_RECOVERIES or done(points):
                break
            recoveries += 1
            past = _past_abnormal_end(problem, points, free, current, ips=ips, with_period=with_period, name=name)
            if past is None:
                log.warning("%s: the engine's corrector failed at %s = %.8g (AUTO MX) and smaller steps did not "
                            "get past it: the branch ends there", name, free[0],
                            _param(points[-1], problem.slots[free[0]]))
                break
            points, used_all = past
            ds_max = max(current.ds_max / 10, current.ds_min)
            current = current.replace(ds_max=ds_max, ds=float(np.sign(current.ds)) * min(abs(current.ds), ds_max))
            if abnormal_end(points):
                continue      # further on, but failed again: smaller steps from there
            if not used_all:
                break         # the small steps reached a bound or the run's end
        else:
            last = points[-1]
            if len(new) < chunk_steps - 1 or not last.is_labeled or int(last.point_type_code) != 9 or done(points):
                break
        last = points[-1]
        log.info("%s: %d points so far (%s)", name, len(points),
                 ", ".join(f"{n} = {_param(last, problem.slots[n]):.6g}" for n in free))
        chunk = current.replace(max_steps=min(chunk_steps, settings.max_steps))
        new = _onward(problem, points, len(points) - 1, free, chunk, ips=ips, with_period=with_period,
                      again=again)
        points = points + new
    return points[: settings.max_steps]


def relocate(problem, points: dict, index: int, free: Sequence[str], settings: ContinuationSettings, *,
             kind: SpecialKind, value: float, state):
    """An engine point of ``kind`` on an equilibrium branch at ``free[0] = value`` and ``state`` (to
    1e-7; a fold's parameter alone says little), found by continuing again from the row before ``index``
    with steps 8, 64, then 512 times smaller than the distance from that row to the one after (parameter
    and state); None when the reruns report none there.

    AUTO's secant location of a test function's zero can be off by 1e-4 where rows are far apart
    (Wilson-Cowan at eps = 6: a fold at Iext_e = 0.3152446 for the true 0.3154143); bifnet's Newton
    solve polishes the point, but a restart needs the engine's own data, and a locus started from the
    mislocated point fails at its first step."""
    before, after = points.get(index - 1), points.get(index + 1, points.get(index))
    if before is None or after is None or not getattr(before, "is_labeled", False):
        return None
    slot = problem.slots[free[0]]
    a, b = (_direction_coordinates(p, problem, free[:1], False) for p in (before, after))
    distance = max(abs(b[0] - a[0]), float(np.linalg.norm(b[1:] - a[1:])) / np.sqrt(max(len(a) - 1, 1)))
    state = np.asarray(state, dtype=float)
    for factor in (8.0, 64.0, 512.0):
        ds = max(distance / factor, settings.ds_min * 2)
        local = settings.replace(ds=ds, ds_max=ds, max_steps=int(3 * factor) + 10)
        for step in (ds, -ds):
            try:
                result = restart(problem, before, free, local, ips="EP", source_ips="EP", switch="continue",
                                 ds=step, with_period=False)
            except ContinuationError:
                continue
            for point in (result.branches[0].points if result.branches else ()):
                if _point_kind(point, BranchKind.EQUILIBRIA) is kind and abs(_param(point, slot) - value) <= 1e-7 * (
                        1.0 + abs(value)) and np.max(np.abs(_full_state(point, state.size) - state)) <= 1e-7 * (
                        1.0 + np.max(np.abs(state))):
                    return point
    return None
