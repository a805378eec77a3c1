"""Transverse (Turing-like) bifurcation curves, traced by continuation.

For a mode with connectome eigenvalue ``Lambda`` the augmented system
(:func:`bifnet.systems.augmented_system`) has the homogeneous solutions on
``y = x`` and, there, a block-triangular Jacobian with blocks ``J_hom`` and
``J(Lambda)``. A Hopf point or fold of its ``y`` block is exactly a
transverse instability of that mode, and AUTO-07p continues it in two
parameters with its standard extended systems.

The search for starting points is cheap and exhaustive along "levels": at
each level (a value of the second parameter, or of ``Lambda`` for neutral
curves) the homogeneous equilibrium branch is continued once, the growth
rate of every mode is evaluated at every point (``eig(A + Lambda B)``), and
every sign change not already on a computed curve (and every sign change of
``det J(Lambda)`` of a mode that is already unstable, :func:`hidden_fold_crossings`)
starts one short augmented continuation (which locates the point exactly) and one locus.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Sequence

import numpy as np

from bifnet.continuation.branch import Branch, SpecialKind
from bifnet.continuation.equilibria import continue_equilibria
from bifnet.continuation.restarts import continue_locus
from bifnet.continuation.settings import ContinuationSettings
from bifnet.errors import BifnetError, ModelError
from bifnet.model import NodeModel
from bifnet.systems import augmented_system, complex_augmented_system

log = logging.getLogger("bifnet.transverse")


@dataclasses.dataclass(frozen=True)
class Mode:
    """A distinct connectome eigenvalue and the modes (1-based) that share it."""

    Lambda: complex
    modes: tuple[int, ...]

    @property
    def mode(self) -> int:
        return self.modes[0]

    @property
    def is_real(self) -> bool:
        return abs(complex(self.Lambda).imag) < 1e-12


def distinct_modes(eigenvalues, tolerance: float = 1e-9) -> list[Mode]:
    """Group equal eigenvalues (sorted by real part descending, mode 1 first)."""
    groups: list[Mode] = []
    for k, lam in enumerate(np.asarray(eigenvalues), 1):
        for i, g in enumerate(groups):
            if abs(complex(g.Lambda) - complex(lam)) < tolerance:
                groups[i] = Mode(g.Lambda, g.modes + (k,))
                break
        else:
            groups.append(Mode(complex(lam) if np.iscomplexobj(lam) else float(np.real(lam)), (k,)))
    return groups


@dataclasses.dataclass(frozen=True)
class Crossing:
    """A sign change of a mode's growth rate between two points of a level."""

    Lambda: complex             #: real for real modes
    level: float
    index: int                  #: point before the change on the level's branch
    value: float                #: interpolated value of the first free parameter
    kind: SpecialKind           #: HB (complex pair) or LP (real eigenvalue)
    frequency_hz: float


def growth_table(model: NodeModel, branch: Branch, Lambdas) -> tuple[np.ndarray, np.ndarray]:
    """Growth rate and frequency (Hz) of every ``Lambda`` (real or complex) at
    every point of an equilibrium branch: arrays of shape (points, K)."""
    from bifnet.transverse.dispersion import equilibrium_dispersion

    params = dict(branch.parameters)
    rates = np.empty((len(branch), len(Lambdas)))
    freqs = np.empty_like(rates)
    for i in range(len(branch)):
        params.update({n: float(branch[n][i]) for n in branch.free})
        x = np.array([branch[v][i] for v in branch.variables])
        rel = equilibrium_dispersion(model, params, x, Lambdas)
        rates[i], freqs[i] = rel.growth_rate, rel.frequency_hz
    return rates, freqs


def find_crossings(branch: Branch, rates: np.ndarray, freqs: np.ndarray, Lambdas, level: float) -> list[Crossing]:
    """Sign changes of each column of ``rates`` along the branch."""
    out = []
    x = branch[branch.free[0]]
    for k, lam in enumerate(np.asarray(Lambdas)):
        lam = complex(lam) if abs(complex(lam).imag) > 0 else float(np.real(lam))
        r = rates[:, k]
        for i in np.flatnonzero(np.sign(r[:-1]) * np.sign(r[1:]) < 0):
            t = r[i] / (r[i] - r[i + 1])
            f = (1 - t) * freqs[i, k] + t * freqs[i + 1, k]
            kind = SpecialKind.HB if min(freqs[i, k], freqs[i + 1, k]) > 1e-6 else SpecialKind.LP
            out.append(Crossing(lam, float(level), int(i), float((1 - t) * x[i] + t * x[i + 1]), kind, float(f)))
    return out


def hidden_fold_crossings(model: NodeModel, branch: Branch, rates: np.ndarray, Lambdas,
                          level: float) -> list[Crossing]:
    """Zero crossings of a real eigenvalue of ``J(Lambda)`` where the mode is already unstable.

    A real eigenvalue of a real mode's ``J(Lambda)`` can cross zero where the growth
    rate (the largest real part) stays positive, e.g. on the saddle branch between two folds of
    the homogeneous state; :func:`find_crossings` does not see it, but it is a transverse branch
    point of the full network all the same. Found by sign changes of ``det J(Lambda)``
    between points of the branch where the growth rate is positive at both ends
    (a sign change of the rate is already a crossing); kind ``LP``, frequency 0.
    """
    from bifnet.codegen import mode_jacobian_functions

    A_fn, B_fn = mode_jacobian_functions(model)
    params = dict(branch.parameters)
    names = list(model.parameter_names)
    p1 = branch.free[0]
    x = branch[p1]
    real = [k for k, lam in enumerate(Lambdas) if abs(complex(lam).imag) == 0]
    if not real or len(branch) < 2:
        return []
    dets = np.empty((len(branch), len(real)))
    for i in range(len(branch)):
        params.update({n: float(branch[n][i]) for n in branch.free})
        pv = np.array([float(params[n]) for n in names])
        state = np.array([branch[v][i] for v in branch.variables], dtype=float)
        A, B = A_fn(state, pv), B_fn(state, pv)
        for j, k in enumerate(real):
            dets[i, j] = np.linalg.det(A + float(np.real(Lambdas[k])) * B)
    out = []
    for j, k in enumerate(real):
        d, r = dets[:, j], rates[:, k]
        for i in np.flatnonzero((np.sign(d[:-1]) * np.sign(d[1:]) < 0) & (r[:-1] > 0) & (r[1:] > 0)):
            t = d[i] / (d[i] - d[i + 1])
            out.append(Crossing(float(np.real(Lambdas[k])), float(level), int(i),
                                float((1 - t) * x[i] + t * x[i + 1]), SpecialKind.LP, 0.0))
    return out


def _on_curve(curves: Sequence[Branch], point: Sequence[float], free, tolerance: float) -> bool:
    """Is ``point`` (in the ``free`` plane) on one of ``curves``?"""
    values = dict(zip(free, point))
    return any(c.distance_to(values) < tolerance for c in curves)


def _block_of(model: NodeModel, x, params: Mapping[str, float], Lambda: float) -> str:
    """``"transverse"`` when the eigenvalue closest to the imaginary axis belongs
    to ``J(Lambda)`` rather than to ``J_hom = J(Lambda_u)`` (on ``y = x``; ``Lambda_u`` = 1 for
    additive, 0 for diffusive coupling)."""
    from bifnet.codegen import mode_jacobian_functions

    A_fn, B_fn = mode_jacobian_functions(model)
    p = np.array([params[k] for k in model.parameter_names])
    A, B = A_fn(np.asarray(x, dtype=float), p), B_fn(np.asarray(x, dtype=float), p)
    hom = np.linalg.eigvals(A + model.coupling.uniform_eigenvalue * B)
    trans = np.linalg.eigvals(A + Lambda * B)
    return "transverse" if np.min(np.abs(trans.real)) < np.min(np.abs(hom.real)) else "homogeneous"


def trace_real_fold(model: NodeModel, level_branch: Branch, crossing: Crossing, free: tuple[str, str],
                    settings: ContinuationSettings, *, Lambda: float, name: str) -> Branch | None:
    """The transverse fold curve of a real mode through a crossing, in ``free``.

    Solves the defining system :func:`bifnet.systems.transverse_fold_system`
    from the crossing (state interpolated on the level, null vector of
    ``J(Lambda)`` from its SVD) and continues it in the second free parameter
    with AUTO-07p; the first free parameter is part of the state there. The
    curve is cut where the first parameter leaves its range.

    Returns
    -------
    Branch or None
        Kind ``LOCUS`` of ``LP``, columns ``free``, the homogeneous state,
        ``period`` (NaN), ``stable`` (-1), ``code`` and ``label``; ``None``
        if the defining system has no solution near the crossing.
    """
    from bifnet.codegen import mode_jacobian_functions
    from bifnet.continuation.branch import BranchKind
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.systems import transverse_fold_system

    p1, q = free
    system = transverse_fold_system(model, p1)
    i = crossing.index
    x_a = np.array([level_branch[v][i] for v in model.variable_names])
    x_b = np.array([level_branch[v][min(i + 1, len(level_branch) - 1)] for v in model.variable_names])
    a, b = level_branch[p1][i], level_branch[p1][min(i + 1, len(level_branch) - 1)]
    t = 0.0 if b == a else float(np.clip((crossing.value - a) / (b - a), 0.0, 1.0))
    x = (1 - t) * x_a + t * x_b
    params = {k: float(v) for k, v in level_branch.parameters.items()}
    params["Lambda"] = float(np.real(Lambda))
    params[p1] = float(crossing.value)
    A_fn, B_fn = mode_jacobian_functions(model)
    pv = np.array([params[k] for k in model.parameter_names])
    _, _, vt = np.linalg.svd(A_fn(x, pv) + params["Lambda"] * B_fn(x, pv))
    start = np.concatenate([x, vt[-1], [params[p1]]])
    others = {k: v for k, v in params.items() if k != p1}
    try:
        z = find_equilibrium(system, others, start, settle_time=0.0)
    except BifnetError:
        return None
    lo1, hi1 = settings.bounds[p1]
    local = settings.replace(bounds={k: v for k, v in settings.bounds.items() if k != p1})
    branch = continue_equilibria(system, others, q, x0=z, settings=local, name=name, settle_time=0.0)
    values = branch[p1]
    inside = (values >= lo1) & (values <= hi1)
    if not inside.any():
        return None
    k0 = int(np.argmin(np.abs(values - params[p1]) + np.where(inside, 0.0, np.inf)))
    first, last = k0, k0
    while first > 0 and inside[first - 1]:
        first -= 1
    while last + 1 < len(values) and inside[last + 1]:
        last += 1
    keep = slice(first, last + 1)
    n = len(values[keep])
    columns = {p1: values[keep], q: branch[q][keep]}
    for v in model.variable_names:
        columns[v] = branch[v][keep]
    columns.update(period=np.full(n, np.nan), stable=np.full(n, -1, dtype=int),
                   code=np.asarray(branch["code"][keep], dtype=int), label=np.asarray(branch["label"][keep], dtype=int))
    parameters = {**params, q: float(branch[q][k0]), p1: float(values[k0])}
    if q != "Lambda":
        parameters.pop("Lambda", None)  # a model's parameters, as on the other loci
    return Branch(kind=BranchKind.LOCUS, name=name, free=(p1, q), columns=columns, parameters=parameters,
                  origin=(level_branch.name, f"{crossing.kind.value}@{crossing.value:.6g}"),
                  locus_of=SpecialKind.LP, Lambda=params["Lambda"],
                  variables=tuple(model.variable_names), status=branch.status,
                  engine={"points": {}, "parameters": dict(parameters), "system": system.name})


def locate_and_continue(model: NodeModel, level_branch: Branch, crossing: Crossing, free: tuple[str, str],
                        settings: ContinuationSettings, *, Lambda: complex, name: str) -> Branch | None:
    """From a crossing on a level, locate the transverse point and continue its locus in ``free``.

    Hopf points (and complex modes): AUTO on the augmented system. Folds of
    real modes: the defining system of :func:`trace_real_fold` (on the
    augmented system they are branch points, not folds)."""
    complex_mode = abs(complex(Lambda).imag) > 0
    if crossing.kind is SpecialKind.LP and not complex_mode:
        return trace_real_fold(model, level_branch, crossing, free, settings, Lambda=float(np.real(Lambda)),
                               name=name)
    system = complex_augmented_system(model) if complex_mode else augmented_system(model, "gradient")
    p1 = level_branch.free[0]
    i = crossing.index
    # AUTO tests for bifurcations only after its first step: start one point before the change
    j = max(i - 1, 0)
    params = dict(level_branch.parameters)
    params[p1] = float(level_branch[p1][j])
    params["Lambda"] = float(np.real(Lambda))
    if complex_mode:
        params["Lambda_imag"] = float(np.imag(Lambda))
    x = np.array([level_branch[v][j] for v in level_branch.variables])
    start = np.concatenate([x, x, np.zeros_like(x)] if complex_mode else [x, x])
    ends = level_branch[p1][[j, i, min(i + 1, len(level_branch) - 1)]]
    lo, hi = float(np.min(ends)), float(np.max(ends))
    width = max(hi - lo, 1e-6)
    local = settings.replace(bounds={**settings.bounds, p1: (lo - 0.25 * width, hi + 0.25 * width)},
                             ds=max(width / 10, 2 * settings.ds_min), ds_max=max(width / 4, 2 * settings.ds_min),
                             max_steps=60)
    branch = continue_equilibria(system, params, p1, x0=start, settings=local,
                                 name=f"{name}:locate", settle_time=0.0)
    candidates = [sp for sp in branch.special_points if sp.kind is crossing.kind]
    if not candidates:
        return None
    target = min(candidates, key=lambda sp: abs(sp.parameters[p1] - crossing.value))
    at = {**params, **target.parameters}
    if _block_of(model, target.state, at, Lambda) != "transverse":
        return None
    locus = continue_locus(branch, target.name, free, settings=settings, name=name)
    return locus


def trace_transverse_curves(model: NodeModel, parameters: Mapping[str, float], modes: Sequence[Mode],
                            free: tuple[str, str], levels: Sequence[float], settings: ContinuationSettings,
                            *, progress=None, trace: Sequence[int] | None = None,
                            failures: list[str] | None = None) -> tuple[list[Branch], list[Crossing], dict]:
    """Every transverse fold and Hopf curve of equilibria, mode by mode.

    Parameters
    ----------
    model : NodeModel
    parameters : mapping
        Parameters (the free ones give the start of each level).
    modes : sequence of Mode
        Distinct eigenvalues to follow (mode 1, the uniform mode, is the
        homogeneous one and is skipped). Complex ones are continued on
        :func:`~bifnet.systems.complex_augmented_system`; a conjugate pair
        shares one curve.
    free : (str, str)
        Continuation parameter along levels, and the level parameter
        (a model parameter, or ``"Lambda"`` for neutral curves).
    levels : sequence of float
        Values of ``free[1]`` at which starting points are searched.
    settings : ContinuationSettings
        With bounds on both free parameters.
    trace : sequence of int, optional
        Only continue the curves of these modes (by ``Mode.mode``; an empty
        list: none, only the levels and their crossings). Default: all.
    failures : list, optional
        Gets one line per level or curve that failed (each is also a warning).

    Returns
    -------
    curves : list of Branch
        Kind ``LOCUS`` of the augmented system; ``mode`` and ``Lambda`` set
        (for neutral curves, ``Lambda`` varies along the curve).
    crossings : list of Crossing
        Where each level's dispersion changed sign (interpolated).
    levels : dict
        ``{level: (equilibrium branch, growth rates (points, K), frequencies)}``, one column per
        entry of ``modes`` (mode 1 included), or the level's Lambda for neutral curves.
    """
    p1, q = free
    neutral = q == "Lambda"
    lo1, hi1 = settings.bounds[p1]
    curves: list[Branch] = []
    crossings: list[Crossing] = []
    table = {}
    followed = [m for m in modes if m.mode != 1]
    unsplit: list = []      # the model's complex augmented system cannot be built (one warning, not one a crossing)
    for level in levels:
        params = dict(parameters)
        params[p1] = lo1
        if not neutral:
            params[q] = float(level)
        try:
            eq = continue_equilibria(model, params, p1, settings=settings.replace(bounds={p1: (lo1, hi1)}),
                                     name=f"level[{q}={level:g}]")
        except BifnetError as error:
            log.warning("level %s = %g: no homogeneous equilibrium branch (%s)", q, level, error)
            if failures is not None:
                failures.append(f"level {q} = {level:g}: no homogeneous equilibrium branch ({error})")
            continue
        # every mode's growth rate (the map reuses them); crossings of all but mode 1
        lams = [float(level)] if neutral else [m.Lambda for m in modes]
        rates, freqs = growth_table(model, eq, lams)
        table[float(level)] = (eq, rates, freqs)
        keep = [k for k, m in enumerate(modes) if m.mode != 1] if not neutral else [0]
        found = find_crossings(eq, rates[:, keep], freqs[:, keep], [lams[k] for k in keep], level)
        if not neutral:   # real zero eigenvalues of modes that are already unstable (saddle branches)
            found += hidden_fold_crossings(model, eq, rates[:, keep], [lams[k] for k in keep], level)
        for c in found:
            crossings.append(c)
            q_value = c.Lambda if neutral else level
            point = (c.value, q_value)
            scale = np.array([hi1 - lo1, np.ptp(settings.bounds[q]) if q in settings.bounds else 1.0])
            tol = 2e-3 * float(np.max(scale))
            # a conjugate pair of eigenvalues shares its curves (J(conj L) = conj J(L))
            same = [cv for cv in curves if neutral or min(abs(complex(cv.Lambda) - c.Lambda),
                                                          abs(complex(cv.Lambda) - np.conj(c.Lambda))) < 1e-9]
            if _on_curve(same, point, free, tol):
                continue
            mode = next((m for m in followed if abs(complex(m.Lambda) - c.Lambda) < 1e-9), None)
            if trace is not None and (mode is None or mode.mode not in trace):
                continue
            tag = f"Lambda={c.Lambda:.6g}" if mode is None else f"mode{mode.mode}"
            name = f"{c.kind.value}[{tag}]#{sum(1 for cv in curves if cv.name.startswith(f'{c.kind.value}[{tag}]')) + 1}"
            complex_mode = abs(complex(c.Lambda).imag) > 0
            if complex_mode and unsplit:
                continue    # said once: the model has no complex augmented system
            try:
                locus = locate_and_continue(model, eq, c, free, settings, Lambda=c.Lambda, name=name)
            except BifnetError as error:
                if complex_mode and isinstance(error, ModelError):
                    unsplit.append(error)
                    log.warning("the curves of complex modes are skipped: %s", error)
                    if failures is not None:
                        failures.append(f"the curves of complex modes: {error}")
                    continue
                log.warning("%s from %s = %g: %s", name, p1, c.value, error)
                if failures is not None:
                    failures.append(f"{name} from {p1} = {c.value:g}: {error}")
                continue
            if locus is None:
                continue
            locus = dataclasses.replace(locus, mode=mode.mode if mode else 0,
                                        Lambda=c.Lambda if not neutral else locus.Lambda)
            curves.append(locus)
            if progress:
                progress(name, locus)
    return curves, crossings, table


# ---------------------------------------------------------------------------
# curves of groups of modes in parallel

def _systems_by_name(model: NodeModel, free: tuple[str, str]) -> dict:
    """The systems a curve can be a locus of, by name; one the model cannot have (the complex augmented
    system of a model whose right-hand side does not split into real and imaginary parts) is left out, so
    it cannot cost the curves of the others."""
    from bifnet.systems import homogeneous_system, transverse_fold_system

    builders = [homogeneous_system, lambda m: augmented_system(m, "gradient"),
                lambda m: transverse_fold_system(m, free[0])]
    if model.coupling is not None:
        builders.append(complex_augmented_system)
    systems = {}
    for build in builders:
        try:
            system = build(model)
        except ModelError:
            continue
        systems[system.name] = system
    return systems


def detach(branch: Branch) -> Branch:
    """``branch`` without its AUTO problem (which holds compiled callbacks), for pickling."""
    problem = (branch.engine or {}).get("problem")
    if problem is None:
        return branch
    engine = {**branch.engine, "problem": ("detached", problem.system.name, dict(problem.slots))}
    return dataclasses.replace(branch, engine=engine)


def attach(model: NodeModel, free, branch: Branch) -> Branch:
    """Undo :func:`detach`: the AUTO problem rebuilt from the system's name (the systems are cached)."""
    from bifnet.continuation._auto import AutoProblem

    problem = (branch.engine or {}).get("problem")
    if not (isinstance(problem, tuple) and problem and problem[0] == "detached"):
        return branch
    system = _systems_by_name(model, free).get(problem[1])
    engine = dict(branch.engine)
    if system is None:
        engine.pop("problem")
    else:
        engine["problem"] = AutoProblem(system, problem[2])
    return dataclasses.replace(branch, engine=engine)


def trace_modes_task(*, model_source: str, parameters: dict, modes, free, levels, settings, trace):
    """One task of :func:`trace_curves_parallel`: the curves of the modes ``trace``."""
    from bifnet.model import load_model

    model = load_model(model_source)
    failures: list[str] = []
    curves, _, _ = trace_transverse_curves(model, parameters, modes, tuple(free), levels, settings, trace=trace,
                                           failures=failures)
    return [detach(c) for c in curves], failures


def mode_chunks(modes: Sequence[Mode], count: int) -> list[list[int]]:
    """Non-uniform mode numbers in ``count`` interleaved chunks; conjugate eigenvalues stay together."""
    units = []
    for m in modes:
        if m.mode == 1:
            continue
        if not m.is_real and complex(m.Lambda).imag < 0 and any(
                abs(complex(o.Lambda) - np.conj(complex(m.Lambda))) < 1e-9 for o in modes):
            continue  # joins its conjugate below
        unit = [m.mode] + [o.mode for o in modes
                           if not m.is_real and o is not m and abs(complex(o.Lambda) - np.conj(complex(m.Lambda))) < 1e-9]
        units.append(unit)
    chunks = [[] for _ in range(max(1, min(count, len(units))))]
    for k, unit in enumerate(units):
        chunks[k % len(chunks)].extend(unit)
    return [c for c in chunks if c]


def trace_curves_parallel(model: NodeModel, parameters: Mapping[str, float], modes: Sequence[Mode],
                          free: tuple[str, str], levels: Sequence[float], settings: ContinuationSettings, *,
                          scheduler=None, workers: int | None = None, chunks: int | None = None,
                          label: str = "transverse curves", failures: list[str] | None = None):
    """:func:`trace_transverse_curves` with the modes' curves traced in parallel (each finished task logged
    with ``label``).

    The levels and their crossings are computed here; the curves of interleaved
    groups of modes are traced by independent tasks (each continues the levels
    again, 0.2 s each) on local processes or a Dask cluster
    (:func:`bifnet.sweep.map_tasks`). A mode's curves depend only on that mode,
    so the result is the serial one, ordered by mode.

    Returns
    -------
    curves, crossings, levels
        As :func:`trace_transverse_curves`.
    """
    import os

    from bifnet.sweep import map_tasks

    found: list[str] = []
    _, crossings, table = trace_transverse_curves(model, parameters, modes, free, levels, settings, trace=[],
                                                  failures=found)
    n = workers or os.cpu_count() or 1
    groups = mode_chunks(modes, chunks or 2 * n)
    tasks = [dict(model_source=model.source, parameters=dict(parameters), modes=list(modes), free=tuple(free),
                  levels=list(levels), settings=settings, trace=g) for g in groups]
    results = map_tasks(trace_modes_task, tasks, scheduler=scheduler, workers=workers,
                        progress=label)
    order = {m.mode: k for k, m in enumerate(modes)}
    curves = [attach(model, free, c) for part, _ in results for c in part]
    if failures is not None:    # each task continues the levels again: a level's failure once
        failures.extend(dict.fromkeys(found + [line for _, lines in results for line in lines]))
    curves.sort(key=lambda c: (order.get(c.mode, len(order)), c.name))
    return curves, crossings, table
