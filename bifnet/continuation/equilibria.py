"""Equilibria: finding one, and continuing them in one parameter."""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import numpy as np

from bifnet._blas import single_threaded_blas
from bifnet.continuation import _auto
from bifnet.continuation.accounting import account
from bifnet.continuation.branch import Branch, BranchKind
from bifnet.continuation.settings import ContinuationSettings
from bifnet.errors import ContinuationError
from bifnet.model import NodeModel
from bifnet.systems import SymbolicSystem, homogeneous_system

log = logging.getLogger("bifnet.continuation")


def as_system(model_or_system: NodeModel | SymbolicSystem) -> SymbolicSystem:
    """The homogeneous system of a model, or the system itself."""
    if isinstance(model_or_system, SymbolicSystem):
        return model_or_system
    return homogeneous_system(model_or_system)


def parameter_vector(system: SymbolicSystem, parameters: Mapping[str, float]) -> np.ndarray:
    """Parameter values in the system's order; a missing one raises :class:`ContinuationError`."""
    missing = [n for n in system.parameter_names if n not in parameters]
    if missing:
        raise ContinuationError(f"no value for parameter(s) {', '.join(missing)} of {system.name}")
    return np.array([float(parameters[n]) for n in system.parameter_names])


def find_equilibrium(model_or_system, parameters: Mapping[str, float], x0=None, *,
                     settle_time: float = 2000.0, tolerance: float = 1e-10,
                     time_limit: float = 30.0) -> np.ndarray:
    """An equilibrium of the homogeneous system near ``x0``.

    Parameters
    ----------
    model_or_system : NodeModel or SymbolicSystem
    parameters : mapping
        Every parameter of the system.
    x0 : array_like, optional
        Starting guess (the model's initial values by default).
    settle_time : float
        Time (ms) to integrate before Newton; 0 skips integration.
    tolerance : float
        Largest acceptable residual ``max |f(x)|``.
    time_limit : float
        Seconds the search may take. The integration stops early (and Newton
        starts from ``x0``) when the state becomes non-finite or the time is
        spent; Newton stops with an error when the time is spent.

    Returns
    -------
    ndarray

    Raises
    ------
    ContinuationError
        When Newton does not converge to ``tolerance``, the right-hand side is
        not finite at ``x0``, or ``time_limit`` is spent.

    Notes
    -----
    Integrates with LSODA and the exact Jacobian (so a stable equilibrium is
    approached from anywhere in its basin), then polishes with a
    Newton-type solver (``scipy.optimize.root``: ``hybr``, then ``lm``).
    """
    from scipy.integrate import solve_ivp
    from scipy.optimize import root

    from bifnet.codegen import jacobian_function, rhs_function

    system = as_system(model_or_system)
    f, J = rhs_function(system), jacobian_function(system)
    p = parameter_vector(system, parameters)
    if not np.all(np.isfinite(p)):
        raise ContinuationError("the parameters must be finite numbers")
    x = np.asarray(system.model.default_state() if x0 is None else x0, dtype=float)
    if x.shape != (system.dimension,):
        raise ContinuationError(f"x0 must have {system.dimension} components, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ContinuationError("x0 must be finite")
    with np.errstate(all="ignore"):
        f0 = f(x, p)
    if not np.all(np.isfinite(f0)):
        raise ContinuationError("the model's right-hand side is not finite at the starting state with these "
                                "parameters (a singular equation?); give another x0 or other parameter values")
    deadline = time.monotonic() + time_limit

    class _Stop(Exception):
        pass

    def guarded(function):
        def call(*args):
            if time.monotonic() > deadline:
                raise _Stop("time")
            with np.errstate(all="ignore"):
                value = function(*args)
            if not np.all(np.isfinite(value)):
                raise _Stop("non-finite")
            return value
        return call

    rhs, jac = guarded(lambda t, y: f(y, p)), guarded(lambda t, y: J(y, p))
    starts = [x]
    if settle_time > 0:
        try:
            sol = solve_ivp(rhs, (0.0, settle_time), x, method="LSODA", jac=jac, rtol=1e-9, atol=1e-12)
            if sol.success and np.all(np.isfinite(sol.y[:, -1])):
                # the settled state first (a stable equilibrium), then x0 itself: where the state settles on
                # a cycle, Newton's method from x0 can still reach an unstable equilibrium next to it
                starts = [sol.y[:, -1], x]
        except _Stop as stop:  # the integration diverged or took too long: polish from x0
            log.debug("find_equilibrium: settling stopped (%s)", stop)
    residual, best = np.inf, x
    for start in starts:
        for method in ("hybr", "lm"):
            try:
                with np.errstate(all="ignore"):
                    sol = root(guarded(lambda y: f(y, p)), start, jac=guarded(lambda y: J(y, p)), method=method,
                               tol=1e-13)
                    value = float(np.max(np.abs(f(sol.x, p))))
            except _Stop as stop:
                if str(stop) == "time":
                    raise ContinuationError(f"no equilibrium found within {time_limit:g} s (the search was "
                                            "stopped); give x0 or start where the system is at rest") from None
                continue
            if np.all(np.isfinite(sol.x)) and value < residual:
                residual, best = value, sol.x
            if residual <= tolerance:
                break
        if residual <= tolerance:
            break
    if not np.isfinite(residual) or residual > tolerance:
        raise ContinuationError(
            f"no equilibrium found near the starting guess (residual {residual:.3g}); "
            "the homogeneous state may oscillate here: give x0 or start where it is at rest"
        )
    return best


@single_threaded_blas()
def continue_equilibria(model_or_system, parameters: Mapping[str, float], free: str | Sequence[str], *,
                        x0=None, settings: ContinuationSettings | None = None, name: str = "eq",
                        both_directions: bool = True, settle_time: float = 2000.0) -> Branch:
    """Continue equilibria in one parameter, detecting folds (LP) and Hopf points (HB).

    Parameters
    ----------
    model_or_system : NodeModel or SymbolicSystem
        A model (its homogeneous system is used) or any symbolic system.
    parameters : mapping
        Values of every parameter at the start.
    free : str or (str,)
        The continuation parameter.
    x0 : array_like, optional
        An equilibrium (or a guess, polished by :func:`find_equilibrium`).
    settings : ContinuationSettings, optional
        ``bounds`` limit the run (e.g. ``{"Iext_e": (0, 40)}``).
    name : str
        Name of the branch.
    both_directions : bool
        Continue from the start point both ways and join the two halves.
    settle_time : float
        Integrate this long (ms) from ``x0`` before Newton; 0 polishes ``x0``
        directly (needed to start on an unstable equilibrium).

    Returns
    -------
    Branch
        Kind ``EQUILIBRIA``; columns: the free parameter, the state variables,
        ``stable``, ``code``, ``label``; special points LP, HB, BP.

    Raises
    ------
    ContinuationError

    Examples
    --------
    >>> from bifnet.model import load_model
    >>> model = load_model("ngnmm_ping")
    >>> p = model.resolve_parameters({"eps": 15.0})
    >>> branch = continue_equilibria(model, p, "Iext_e",
    ...     settings=ContinuationSettings(bounds={"Iext_e": (0.0, 40.0)}))   # doctest: +SKIP
    >>> [round(sp.parameters["Iext_e"], 4) for sp in branch.points_of_kind("HB")]   # doctest: +SKIP
    [2.8758, 11.6378]

    Notes
    -----
    AUTO-07p's pseudo-arclength continuation (IPS = 1) with the exact
    Jacobian generated by sympy and compiled (bifpy ``transpile=True``).
    """
    free = (free,) if isinstance(free, str) else tuple(free)
    if len(free) != 1:
        raise ContinuationError(f"equilibria are continued in one parameter, got {list(free)}")
    system = as_system(model_or_system)
    missing = [n for n in free if n not in system.parameter_names]
    if missing:
        raise ContinuationError(f"{system.name} has no parameter {missing[0]!r}")
    settings = settings or ContinuationSettings()
    start = dict(parameters)
    lo, hi = settings.bounds.get(free[0], (-np.inf, np.inf))
    if not lo <= start[free[0]] <= hi:
        raise ContinuationError(
            f"start value {free[0]} = {start[free[0]]} lies outside its range [{lo}, {hi}]"
        )
    x = find_equilibrium(system, start, x0, settle_time=settle_time)
    problem = _auto.auto_problem(system)
    ds = abs(settings.ds)
    runs = []
    value = start[free[0]]
    directions = [step for step in ((-ds, ds) if both_directions else (settings.ds,))
                  if not (step < 0 and value <= lo) and not (step > 0 and value >= hi)]
    for step in directions:
        result = _auto.run_equilibria(problem, x, start, free, settings, step)
        run = list(result.branches[0].points) if result.branches else []
        # a run that ended where the engine's corrector failed (MX) is taken past that point
        runs.append(_auto.continue_in_chunks(problem, run, free, settings, chunk_steps=settings.max_steps,
                                             ips="EP", with_period=False, done=lambda points: False, name=name))
    # the augmented system reports the homogeneous part x only (y = x on its solutions)
    half = slice(0, system.model.n_variables) if system.kind == "augmented" else None
    runs = [list(r) for r in runs]
    points = runs[0][::-1][:-1] + runs[1] if len(runs) == 2 else (runs[0] if runs else [])

    def convert(raw):
        return _auto.convert_branch([raw], problem, kind=BranchKind.EQUILIBRIA, name=name, free=free,
                                    parameters=start, state_slice=half)

    branch = account(points, convert, problem, free, settings, cycles=False)
    branch = end_at_bounds(branch, settings, system)
    # AUTO labels the last point of a run EP whether it reached a bound or its step limit
    if any(len(r) >= settings.max_steps for r in runs):
        branch = _with_status(branch, "max_steps")
    elif _auto.abnormal_end_status(runs, problem, free):
        branch = _with_status(branch, _auto.abnormal_end_status(runs, problem, free))
    elif any(r and int(r[-1].point_type_code) != 9 for r in runs):
        branch = _with_status(branch, "stopped")
    log.debug("%s: %d points, %s", name, len(branch), ", ".join(sp.name for sp in branch.special_points))
    return branch


def end_at_bounds(branch: Branch, settings: ContinuationSettings, system: SymbolicSystem) -> Branch:
    """End the branch at the bounds of its principal parameter, not past them.

    AUTO stops at the first point beyond a bound. For equilibria that end row
    is replaced by the equilibrium at the bound itself (Newton's method from
    the interpolated state), its ``stable`` from the exact Jacobian there (the
    row past the bound can lie on another part of the curve: past a fold the
    last step jumped over); rows that cannot be solved, and cycle rows past a
    bound, are dropped, and so are special points past the bound the branch
    now ends at (a fold that bifnet located between the last row inside and
    the one past the bound lies outside the range, not between the rows).
    """
    import dataclasses

    name = branch.free[0]
    lo, hi = settings.bounds.get(name, (-np.inf, np.inf))
    n = len(branch)
    if n < 2:
        return branch
    values = branch[name]
    columns = {k: np.array(v, copy=True) for k, v in branch.columns.items()}
    keep = np.ones(n, dtype=bool)
    special_rows = {sp.index for sp in branch.special_points}
    cut = []    # (bound, value of the row inside it) where the branch is ended
    for end, inner in ((0, 1), (n - 1, n - 2)):
        v = float(values[end])
        if lo - 1e-12 * max(1.0, abs(lo)) <= v <= hi + 1e-12 * max(1.0, abs(hi)) or end in special_rows:
            continue
        bound = lo if v < lo else hi
        w = (bound - values[inner]) / (v - values[inner]) if v != values[inner] else 1.0
        solved = False
        if branch.kind is BranchKind.EQUILIBRIA and len(branch.variables) == system.dimension:
            guess = np.array([columns[c][inner] + w * (columns[c][end] - columns[c][inner]) for c in branch.variables])
            try:
                x = find_equilibrium(system, {**branch.parameters, name: bound}, guess, settle_time=0.0)
            except ContinuationError:
                x = None
            if x is not None:
                columns[name][end] = bound
                for c, value in zip(branch.variables, x):
                    columns[c][end] = value
                if "stable" in columns:
                    columns["stable"][end] = _stability_at(system, {**branch.parameters, name: bound}, x)
                solved = True
        if not solved:
            keep[end] = False
        cut.append((bound, float(values[inner])))
    if keep.all() and np.array_equal(columns[name], values):
        return branch
    index = np.cumsum(keep) - 1
    columns = {k: v[keep] for k, v in columns.items()}
    specials = []
    for sp in branch.special_points:
        value = sp.parameters.get(name)
        past = [bound for bound, inside in cut if value is not None and (value - bound) * (bound - inside) > 0]
        if past:
            log.info("%s: %s at %s = %.10g lies past the end of its range (%s = %g): not reported", branch.name,
                     sp.name, name, value, name, past[0])
            continue
        specials.append(dataclasses.replace(sp, index=int(index[sp.index])))
    if len(specials) < len(branch.special_points):
        from bifnet.continuation.restarts import _renumber

        specials = _renumber(specials)
    specials = tuple(specials)
    engine = dict(branch.engine or {})
    if "points" in engine:
        engine["points"] = {int(index[i]): p for i, p in engine["points"].items() if i < n and keep[i]}
    return dataclasses.replace(branch, columns=columns, special_points=specials, engine=engine)


def _stability_at(system: SymbolicSystem, parameters: Mapping[str, float], x) -> int:
    """``stable`` of an equilibrium from the exact Jacobian: 1, 0, or -1 (an eigenvalue within a relative 1e-9
    of the imaginary axis)."""
    from bifnet.codegen import jacobian_function
    from bifnet.continuation.accounting import unstable_counts

    p = np.array([parameters[n] for n in system.parameter_names], dtype=float)
    with np.errstate(all="ignore"):
        M = jacobian_function(system)(np.asarray(x, dtype=float), p)
    if not np.all(np.isfinite(M)):
        return -1
    count = int(unstable_counts(np.linalg.eigvals(M)[None, :])[0])
    return -1 if count < 0 else int(count == 0)


def _with_status(branch: Branch, status: str) -> Branch:
    import dataclasses

    return dataclasses.replace(branch, status=status)
