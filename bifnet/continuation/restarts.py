"""Restarts from special points: cycles from Hopf points, period-doubled
cycles from PD points, and two-parameter loci of LP, HB, LPC, PD and NS.

One verb, :func:`continue_from`, dispatches on the point and on the number of
free parameters.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from bifnet._blas import single_threaded_blas
from bifnet.continuation import _auto
from bifnet.continuation.accounting import MESH_OFFSET, account, mesh_symptoms
from bifnet.continuation.equilibria import end_at_bounds
from bifnet.continuation.verify import verify_branch
from bifnet.continuation.branch import Branch, BranchKind, SpecialKind, SpecialPoint
from bifnet.continuation.settings import ContinuationSettings
from bifnet.errors import ContinuationError

log = logging.getLogger("bifnet.continuation")



def _engine_point(branch: Branch, point: SpecialPoint):
    engine = branch.engine or {}
    raw = engine.get("points", {}).get(point.index)
    if point.details.get("found_by") == "accounting":
        raise ContinuationError(
            f"cannot restart from {branch.name}:{point.name}: bifnet located it after the engine missed it, so "
            f"the engine has no data to restart from; rerun with a smaller ds_max or a finer mesh (ntst)")
    if raw is None:
        raise ContinuationError(f"cannot restart from {branch.name}:{point.name}: the engine kept no data for it")
    return raw


def _amplitude(branch: Branch) -> np.ndarray:
    """Largest (max - min) over the variables of each cycle."""
    spans = [branch[f"{v}_max"] - branch[f"{v}_min"] for v in branch.variables]
    return np.nanmax(np.vstack(spans), axis=0)


def _cut(branch: Branch, stop: int, status: str | None = None) -> Branch:
    """Keep rows ``0..stop`` (inclusive) and the special points among them."""
    columns = {k: v[: stop + 1] for k, v in branch.columns.items()}
    specials = tuple(sp for sp in branch.special_points if sp.index <= stop)
    points = {i: p for i, p in branch.engine["points"].items() if i <= stop}
    return dataclasses.replace(branch, columns=columns, special_points=specials,
                               engine={**branch.engine, "points": points},
                               status=status or branch.status)


def _closing_index(values, periods, amps, hopfs) -> int | None:
    """Where a cycle branch returns to a Hopf point, or None.

    ``hopfs`` holds ``(parameter, period)`` of the Hopf points of the source
    branch. A return is a point of small amplitude (under 2 % of the largest so
    far, and the branch has grown at least 50-fold since) whose parameter and
    period are within 1 % and 5 % of a Hopf point; the branch is cut at the
    smallest amplitude of that stretch.
    """
    amps = np.asarray(amps, dtype=float)
    running = np.fmax.accumulate(np.nan_to_num(amps, nan=0.0))
    near = np.zeros(len(amps), dtype=bool)
    for value, period in hopfs:
        near |= (np.abs(np.asarray(values) - value) < 0.01 * (1 + abs(value))) & (
            np.abs(np.asarray(periods) - period) < 0.05 * period)
    candidates = near & (amps < 0.02 * running) & (running > 50 * np.maximum(amps, 1e-300))
    idx = np.flatnonzero(candidates)
    if idx.size == 0:
        return None
    first = idx[0]
    stretch = first
    while stretch + 1 < len(amps) and candidates[stretch + 1]:
        stretch += 1
    return int(first + np.argmin(amps[first:stretch + 1]))


def ends_at_hopf(cycles: Branch, hopf: SpecialPoint) -> bool:
    """Did a closed cycle branch end at ``hopf`` (same tolerances as the cut)?"""
    if not cycles.status.startswith("closed") or len(cycles) == 0:
        return False
    name = cycles.free[0]
    value, period = hopf.parameters.get(name), hopf.period
    if value is None or not np.isfinite(period):
        return False
    return bool(abs(cycles[name][-1] - value) < 0.01 * (1 + abs(value))
                and abs(cycles["period"][-1] - period) < 0.05 * period)


def _close_cycle_branch(branch: Branch, hopfs) -> Branch:
    """Cut a cycle branch where it returns to a Hopf point.

    AUTO-07p goes round a closed branch (Hopf to Hopf) until its step limit;
    past a Hopf point it retraces the same orbits shifted by half a period.
    AUTO also labels "FOLD" where the branch meets a Hopf point; those are not
    folds of cycles and are dropped.
    """
    amp = _amplitude(branch)
    if len(amp) < 3:
        return branch
    branch = _drop_hopf_folds(branch)
    stop = _closing_index(branch[branch.free[0]], branch["period"], amp, hopfs)
    if stop is None:
        return branch
    return _cut(branch, stop, "closed (reached a Hopf point)")


def _drop_hopf_folds(branch: Branch) -> Branch:
    """Drop the "FOLD" points AUTO labels where a cycle branch meets a Hopf
    point (amplitude zero): they are not folds of cycles."""
    amp = _amplitude(branch)
    if len(amp) < 3:
        return branch
    scale = max(np.nanmax(amp), 1e-12)
    specials = tuple(sp for sp in branch.special_points
                     if not (sp.kind is SpecialKind.LPC and amp[sp.index] < 1e-3 * scale))
    if len(specials) == len(branch.special_points):
        return branch
    return dataclasses.replace(branch, special_points=_renumber(specials))


#: A doubled branch is back at a PD point of its parent on a row whose period is within this fraction of
#: twice the point's period and whose parameter is within it (times ``1 + |value|``) ...
RETURN_TOLERANCE = 1e-3
#: ... and whose every variable's minimum and maximum lie within this fraction of the largest range of
#: the parent's orbit there (the orbit is the parent's, traversed twice).
RETURN_SHAPE = 0.05


def _cut_at_parent_doubling(doubled: Branch, parent: Branch, start: SpecialPoint) -> Branch:
    """Cut a period-doubled branch where it returns to a PD point of its parent.

    There the doubled orbits merge with the parent orbit traversed twice (its
    own start included: the doubled orbits often form a loop between PD
    points), at the vertex of a parabola in the parameter, and AUTO goes on
    along that double cover, a copy of the parent branch rather than new orbits,
    or round the loop again.

    The return is found from the rows (:func:`_return_row`), not from an engine
    point: at eps = 29.5 the doubled branch from PD1 went between its parent's
    PD1 and PD2 (parameter range 1.3e-4) three times over 97 rows, with no
    engine point at the returns, and 24 "unexplained" events came of it. The
    engine's special point at the return row (AUTO calls it a fold; it is the
    branch point where the doubled orbits meet the double cover) is the parent's
    PD point, verified on the parent, and is dropped: at eps = 12 its fold
    system failed to converge (residual 1e-7) and it was listed as an unlocated
    LPC.
    """
    found = _return_row(doubled, parent, start)
    if found is None:
        return doubled
    row, pd = found
    cut = _cut(doubled, row, f"closed (returned to {pd.name} of {parent.name})")
    kept = tuple(o for o in cut.special_points if o.index < row)
    return dataclasses.replace(cut, special_points=_renumber(kept))


def _return_row(doubled: Branch, parent: Branch, start: SpecialPoint) -> tuple[int, SpecialPoint] | None:
    """``(row, PD point)`` where a doubled branch, after leaving its start, comes back to a PD point of its
    parent (:data:`RETURN_TOLERANCE`, :data:`RETURN_SHAPE`): of the rows near that point, the one whose
    period is closest to twice the point's."""
    name = doubled.free[0]
    if len(doubled) < 3 or "period" not in doubled.columns or "period" not in parent.columns:
        return None
    T, p = np.asarray(doubled["period"], dtype=float), np.asarray(doubled[name], dtype=float)
    variables = [v for v in doubled.variables if f"{v}_min" in doubled.columns and f"{v}_min" in parent.columns]

    def close(k, value, period):
        return abs(p[k] - value) < RETURN_TOLERANCE * (1.0 + abs(value)) and \
            abs(T[k] - 2.0 * period) < RETURN_TOLERANCE * period

    def near(k, pd):
        if not close(k, pd.parameters[name], pd.period):
            return False
        i = min(max(pd.index, 0), len(parent) - 1)
        lows = [float(parent[f"{v}_min"][i]) for v in variables]
        highs = [float(parent[f"{v}_max"][i]) for v in variables]
        span = max((h - lo for h, lo in zip(highs, lows)), default=0.0)
        return all(abs(float(doubled[f"{v}_min"][k]) - lo) <= RETURN_SHAPE * span and
                   abs(float(doubled[f"{v}_max"][k]) - h) <= RETURN_SHAPE * span
                   for v, lo, h in zip(variables, lows, highs))

    pds = [pd for pd in parent.points_of_kind(SpecialKind.PD)
           if name in pd.parameters and np.isfinite(pd.period) and pd.period > 0]
    origin = (start.parameters.get(name, p[0]), start.period if np.isfinite(start.period) else T[0] / 2.0)
    away = next((k for k in range(len(doubled)) if not close(k, *origin)), None)
    if away is None:
        return None
    for k in range(away, len(doubled)):
        for pd in pds:
            if near(k, pd):
                j = k
                while j + 1 < len(doubled) and near(j + 1, pd):
                    j += 1
                return min(range(k, j + 1), key=lambda r: abs(T[r] - 2.0 * pd.period)), pd
    return None


def _renumber(specials) -> tuple[SpecialPoint, ...]:
    counts: dict[SpecialKind, int] = {}
    out = []
    for sp in sorted(specials, key=lambda s: s.index):
        counts[sp.kind] = counts.get(sp.kind, 0) + 1
        out.append(dataclasses.replace(sp, name=f"{sp.kind.value}{counts[sp.kind]}"))
    return tuple(out)


def _drop_duplicate_specials(branch: Branch) -> Branch:
    """AUTO may report one bifurcation twice when a branch goes back over it."""
    keep = []
    for sp in branch.special_points:
        twin = any(o.kind is sp.kind and all(abs(o.parameters[k] - v) < 1e-6 * max(1.0, abs(v))
                                             for k, v in sp.parameters.items()) for o in keep)
        if not twin:
            keep.append(sp)
    return dataclasses.replace(branch, special_points=_renumber(keep))


#: A homoclinic orbit is claimed only when the orbit passes this close to a saddle (relative to its size).
HOMOCLINIC_DISTANCE = 0.05


def _classify_blow_up(cycles: Branch, source: Branch | None, settings: ContinuationSettings) -> Branch:
    """Label a period blow-up as SNIC (at a fold of equilibria) or HOM, where the orbit says so.

    A branch whose period reaches ``max_period`` (:func:`_blow_up_index`) ends there. It is a SNIC when a
    fold of the source equilibria lies within 1e-3 of its parameter, and HOM when its last orbit passes
    within ``HOMOCLINIC_DISTANCE`` of its size of a saddle equilibrium at the same parameter (the
    distance is the point's residual). Otherwise nothing near the orbit explains a long period (on
    ngnmm_ping at eps = 30 the branch from HB2 reached 295 ms, with the only equilibrium, not a saddle,
    0.07 away; the period peaks at 298 ms and the family goes on to HB1): the branch ends at
    ``max_period`` with no point.
    """
    period = cycles["period"]
    if len(period) == 0 or not np.isfinite(period[-1]) or period[-1] < BLOW_UP_FRACTION * settings.max_period:
        return cycles
    name = cycles.free[0]
    value = float(cycles[name][-1])
    kind = SpecialKind.HOM
    details = {}
    if source is not None and source.kind is BranchKind.EQUILIBRIA:
        folds = [sp for sp in source.points_of_kind(SpecialKind.LP) if name in sp.parameters]
        if folds:
            nearest = min(folds, key=lambda sp: abs(sp.parameters[name] - value))
            distance = abs(nearest.parameters[name] - value)
            details["nearest_fold"] = nearest.name
            details["distance_to_fold"] = distance
            if distance < 1e-3 * max(1.0, abs(value)):
                kind = SpecialKind.SNIC
    index = len(period) - 1
    check = _blow_up_check(cycles, source, index) if source is not None else None
    extra = {}
    if check is not None:
        distance, size, eigenvalues = check
        saddle = bool(np.any(eigenvalues.real > 0) and np.any(eigenvalues.real < 0))
        details["equilibrium_distance"] = distance
        if kind is SpecialKind.HOM and not (saddle and distance <= HOMOCLINIC_DISTANCE * size):
            log.info("%s: the period reached %.0f ms at %s = %.6g, but no saddle is near the orbit (the nearest "
                     "equilibrium, %s, is %.2g away, the orbit %.2g across): no homoclinic orbit claimed",
                     cycles.name, period[-1], name, value, "a saddle" if saddle else "not a saddle", distance, size)
            return dataclasses.replace(cycles, status=(
                f"max_period (the period reached {period[-1]:.0f} ms at {name} = {value:.6g}; no saddle near the "
                f"orbit: not a homoclinic orbit)"))
        extra = dict(residual=distance / size, verification=(
            f"check: the orbit of the last row passes within {distance:.2g} ({distance / size:.2g} of its size) "
            f"of {'a saddle' if saddle else 'an equilibrium'} at the same {name} (max-norm over the orbit's mesh)"))
    sp = SpecialPoint(kind=kind, index=index, parameters={n: float(cycles[n][-1]) for n in cycles.free},
                      period=float(period[-1]), located=False, name=f"{kind.value}1", details=details, **extra)
    log.info("%s: period reached %.0f ms at %s = %.6g: %s", cycles.name, period[-1], name, value, kind.value)
    return dataclasses.replace(cycles, special_points=cycles.special_points + (sp,),
                               status=f"period blow-up ({kind.value})")


def _blow_up_check(cycles: Branch, source: Branch, index: int):
    """How close the orbit of row ``index`` comes to an equilibrium of ``source`` at the same parameter:
    ``(distance, the orbit's size, the equilibrium's eigenvalues)`` for the nearest, or None when there
    is none to compare (size: the largest max - min of a variable over the orbit).

    An orbit whose period blows up at a homoclinic orbit or a SNIC spends its time near a saddle or a
    saddle-node; the equilibria at the orbit's parameter are solved by Newton's method from the
    source branch's rows that bracket it and from the orbit's slowest point (where ``|f|`` is least: the
    source branch may not reach the saddle, e.g. when its fold lies outside the bounds), and the
    distance is the max-norm over the orbit's mesh."""
    from bifnet.codegen import rhs_function
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.continuation.verify import _eigen

    raw = (cycles.engine or {}).get("points", {}).get(index)
    orbit = getattr(raw, "periodic_orbit", None)
    problem = (source.engine or {}).get("problem")
    system = getattr(problem, "system", None)
    if orbit is None or system is None or system.kind != "homogeneous" or source.kind is not BranchKind.EQUILIBRIA:
        return None
    name = cycles.free[0]
    value = float(cycles[name][index])
    values = {**source.parameters, name: value}
    profile = np.asarray(orbit.state, dtype=float)[:, : system.dimension]
    along = np.asarray(source[name], dtype=float) - value
    guesses = []
    for i in np.flatnonzero(np.sign(along[:-1]) != np.sign(along[1:])):
        w = along[i] / (along[i] - along[i + 1])
        guesses.append(np.array([source[v][i] + w * (source[v][i + 1] - source[v][i]) for v in source.variables]))
    p = np.array([values[n] for n in system.parameter_names])
    f = rhs_function(system)
    speed = [float(np.max(np.abs(f(x, p)))) for x in profile]
    guesses.append(profile[int(np.argmin(speed))])
    size = float(np.max(np.ptp(profile, axis=0)))
    best = None
    for guess in guesses:
        try:
            x = find_equilibrium(system, values, guess, settle_time=0.0)
        except ContinuationError:
            continue
        distance = float(np.min(np.max(np.abs(profile - x), axis=1)))
        if best is None or distance < best[0]:
            best = (distance, size, _eigen(system, x, values))
    return best


#: Mesh intervals tried, in turn, for a cycle branch whose trivial multiplier says its mesh is too coarse.
MESH_LADDER = (150, 250)
#: Fraction of the rows of a cycle branch allowed a trivial multiplier off by more than TRIVIAL_WARNING.
POOR_MESH_FRACTION = 0.05


@single_threaded_blas()
def continue_cycles(branch: Branch, point: str, *, free: Sequence[str] | None = None,
                    settings: ContinuationSettings | None = None, name: str | None = None) -> Branch:
    """Periodic orbits from a Hopf point (or the doubled orbits from a PD point).

    When more than :data:`POOR_MESH_FRACTION` of the rows are mesh symptoms
    (a trivial multiplier off by more than ``TRIVIAL_WARNING`` on a row that
    bifnet's own orbit puts off the branch,
    :func:`~bifnet.continuation.accounting.mesh_symptoms`; on other than
    homogeneous systems the trivial multiplier alone), the branch is computed
    again with more mesh intervals (:data:`MESH_LADDER`), and the
    best-resolved result is kept;
    ``accounting["ntst"]`` says which mesh it has. The doubled orbits from a
    PD point start on the mesh their parent branch ended with (they go round
    twice). On ngnmm_ping at eps = 30
    the branch from HB2 with ``ntst = 60`` wandered for 500 steps through
    spurious folds; with 150 it reaches the homoclinic orbit in 120 steps.

    Parameters
    ----------
    branch : Branch
        An equilibrium branch (for ``HB`` points) or a cycle branch (for
        ``PD`` points).
    point : str
        ``"HB1"``, ``"PD2"``...
    free : (str,), optional
        Continuation parameter; the branch's own by default.
    settings : ContinuationSettings, optional
    name : str, optional
        Branch name (default ``"<branch>:<point>"``).

    Returns
    -------
    Branch
        Kind ``CYCLES``: columns ``period`` (ms), ``<var>_min``, ``<var>_max``,
        ``stable`` (from the Floquet multipliers); special points LPC, PD, NS,
        and SNIC or HOM when the period blows up (``settings.max_period``).

    Notes
    -----
    Orthogonal collocation (AUTO-07p IPS = 2) with ``settings.ntst`` mesh
    intervals; period doubling and torus detection need ISP = 2
    (``settings.detect_cycle_bifurcations``). A closed branch joining two Hopf
    points is cut where it reaches the second one.
    """
    settings = settings or ContinuationSettings()
    best, best_fraction = None, np.inf
    requested = settings.ntst
    parent = int((branch.accounting or {}).get("ntst", 0)) if branch.kind is BranchKind.CYCLES else 0
    if parent > settings.ntst:
        # doubled orbits go round twice: they need at least the mesh their parent branch needed
        settings = settings.replace(ntst=parent)
    ladder = (settings.ntst,) + tuple(n for n in MESH_LADDER if n > settings.ntst)
    for ntst in ladder:
        cycles = _continue_cycles_once(branch, point, free, settings.replace(ntst=ntst), name,
                                       mesh_check=ntst != ladder[-1])
        poor = cycles.accounting.get("mesh_symptoms", 0)
        cycles = dataclasses.replace(cycles, accounting={**cycles.accounting, "ntst": ntst})
        fraction = poor / max(len(cycles), 1)
        if best is None or fraction <= best_fraction:  # ties go to the finer mesh
            best, best_fraction = cycles, fraction
        if "refinements" in cycles.accounting:  # verified and accounted: the mesh was good enough
            break
        log.info("%s: %d of %d rows are off the branch (a poor trivial multiplier, and bifnet's own orbit "
                 "differs) with ntst = %d: computing it again with a finer mesh", cycles.name, poor, len(cycles), ntst)
    if "refinements" not in best.accounting:  # the best mesh was only checked: verify it now
        ntst = best.accounting["ntst"]
        best = _continue_cycles_once(branch, point, free, settings.replace(ntst=ntst), name)
        best = dataclasses.replace(best, accounting={**best.accounting, "ntst": ntst})
    if best.accounting["ntst"] != requested:
        best = dataclasses.replace(best, accounting={**best.accounting, "ntst_requested": requested})
    return best


def _continue_cycles_once(branch: Branch, point: str, free, settings: ContinuationSettings, name, *,
                          mesh_check: bool = False) -> Branch:
    """One cycle continuation on one mesh. With ``mesh_check``, a branch whose
    mesh is too coarse is returned unverified (only its ``mesh_symptoms``
    counted), as it will be computed again on a finer mesh."""
    free = tuple(free) if free else branch.free[:1]
    sp = branch.point(point)
    raw = _engine_point(branch, sp)
    problem = branch.engine["problem"]
    params = dict(branch.parameters)
    params.update(sp.parameters)
    name = name or f"{branch.name}:{point}"
    if sp.kind is SpecialKind.HB and branch.kind is BranchKind.EQUILIBRIA:
        switch, source_ips = "hopf", "EP"
    elif sp.kind in (SpecialKind.PD, SpecialKind.BP) and branch.kind is BranchKind.CYCLES:
        switch, source_ips = "branch", "LC"
    else:
        raise ContinuationError(f"cannot start cycles from {sp.kind.value} on a {branch.kind.value} branch")
    hopfs = [(h.parameters[free[0]], h.period) for h in branch.points_of_kind(SpecialKind.HB)
             if free[0] in h.parameters] if switch == "hopf" else []
    slot = problem.slots[free[0]]
    lo, hi = settings.bounds.get(free[0], (-np.inf, np.inf))

    symptoms: dict = {}   # rows checked for a mesh too coarse, across the chunks

    def poor_mesh(points) -> int:
        if problem.system.kind != "homogeneous":
            return _poor_mesh(points)
        return mesh_symptoms(points, problem.system.model, params, free[0], slot, _auto.PERIOD_SLOT, symptoms)

    def done(points):
        last = points[-1]
        if not lo < _auto._param(last, slot) < hi or _blow_up_index(points, settings) is not None:
            return True
        if mesh_check and poor_mesh(points) > POOR_MESH_FRACTION * len(points):
            return True  # the mesh is too coarse: stop here, a finer one follows
        if sp.kind is SpecialKind.PD and convert(points).status.startswith("closed"):
            return True  # back at a PD point of the parent: the rest would be cut (the parent orbit twice)
        return bool(hopfs) and _closing_index(*_trace(points, slot), hopfs) is not None

    def convert(raw):
        converted = _auto.convert_branch([raw], problem, kind=BranchKind.CYCLES, name=name, free=free,
                                         parameters=params, origin=(branch.name, point), mode=branch.mode,
                                         Lambda=branch.Lambda, state_slice=_state_slice(branch))
        converted = _drop_duplicate_specials(_drop_hopf_folds(converted))
        if sp.kind is SpecialKind.PD:
            converted = _cut_at_parent_doubling(converted, branch, sp)
        return converted

    points = _continue_in_chunks(problem, raw, free, settings, ips="LC", source_ips=source_ips, switch=switch,
                                 ds=settings.ds, with_period=True, done=done, name=name)
    blow_up = _blow_up_index(points, settings)
    if blow_up is not None:
        points = points[: blow_up + 1]  # the period blew up there, wherever AUTO's chunk ended

    cycles = convert(points)
    if switch == "hopf":
        cycles = _close_cycle_branch(cycles, hopfs)
    status = cycles.status
    points = points[: len(cycles)]
    if status == "ok" and len(points) >= settings.max_steps:
        status = "max_steps"
    elif status == "ok" and _auto.abnormal_end(points):
        status = _auto.abnormal_end_status([points], problem, free)
    if mesh_check:
        poor = poor_mesh(points)
        if poor > POOR_MESH_FRACTION * max(len(cycles), 1):
            return dataclasses.replace(cycles, accounting={"mesh_symptoms": poor})
    # verify every point and explain every stability change (refining where needed)
    cycles = account(points, lambda raw: dataclasses.replace(convert(raw), status=status), problem, free,
                     settings, cycles=True)
    if problem.system.kind == "homogeneous" and cycles.accounting.get("poor_mesh_points"):
        off = poor_mesh(points)
        cycles = dataclasses.replace(cycles, accounting={**cycles.accounting, "mesh_symptoms": off})
        if off > POOR_MESH_FRACTION * len(cycles):
            log.warning("%s: %d rows lie off the branch by more than %g of the parameter (bifnet's own orbits "
                        "there): the mesh is too coarse for them; raise ntst", cycles.name, off,
                        MESH_OFFSET)
    cycles = end_at_bounds(cycles, settings, problem.system)
    source = branch if branch.kind is BranchKind.EQUILIBRIA else None
    return _classify_blow_up(cycles, source, settings)


def _poor_mesh(points) -> int:
    """Engine points whose trivial Floquet multiplier is off by more than TRIVIAL_WARNING."""
    from bifnet.continuation.accounting import point_multipliers, trivial_errors
    from bifnet.continuation.verify import TRIVIAL_WARNING

    return int(np.sum(trivial_errors(point_multipliers(points)) > TRIVIAL_WARNING))


CHUNK_STEPS = 120  #: steps per AUTO call on cycle branches


def _continue_in_chunks(problem, start, free, settings, *, ips, source_ips, switch, ds, with_period,
                        done, name):
    """An AUTO restart from ``start``, then :func:`bifnet.continuation._auto.continue_in_chunks` in
    chunks of :data:`CHUNK_STEPS` steps (``done(points)`` is asked after each)."""
    chunk = settings.replace(max_steps=min(CHUNK_STEPS, settings.max_steps))
    result = _auto.restart(problem, start, free, chunk, ips=ips, source_ips=source_ips, switch=switch,
                           ds=ds, with_period=with_period)
    points = list(result.branches[0].points) if result.branches else []
    return _auto.continue_in_chunks(problem, points, free, settings, chunk_steps=chunk.max_steps, ips=ips,
                                    with_period=with_period, done=done, name=name,
                                    again="locus" if switch == "locus" else "continue")


def _period(point) -> float:
    return _auto._param(point, _auto.PERIOD_SLOT)


#: A cycle branch stops where its period reaches ``settings.max_period`` (AUTO's own stop, UZSTOP, puts
#: its last point there to the engine's tolerance, hence the fraction).
BLOW_UP_FRACTION = 1.0 - 1e-6


def _blow_up_index(points, settings: ContinuationSettings) -> int | None:
    """First row whose period reaches ``max_period`` (:data:`BLOW_UP_FRACTION` of it), or None.

    Every row is looked at, not only the last one of a chunk, so that where a branch stops does not
    depend on where AUTO's chunks end. The limit is ``max_period`` itself, as its documentation says:
    a period that peaks below it does not end the branch. (Until 2026-12, 0.98 max_period was tested at
    the end of each chunk only: on ngnmm_ping at eps = 30 the family from HB1 stopped at 295 ms, labelled
    HOM, or went on, by the chunk length; its period peaks at 298 ms, far from any saddle, and the family
    goes on to HB2.)
    """
    limit = BLOW_UP_FRACTION * settings.max_period
    for i, point in enumerate(points):
        period = _period(point)
        if np.isfinite(period) and period >= limit:
            return i
    return None


def _trace(points, slot):
    """Parameter, period and amplitude of raw AUTO cycle points."""
    values = [_auto._param(p, slot) for p in points]
    periods = [_period(p) for p in points]
    amps = []
    for p in points:
        if p.periodic_orbit is None:
            amps.append(np.nan)
            continue
        profile = np.asarray(p.periodic_orbit.state, dtype=float)
        amps.append(float(np.max(profile.max(axis=0) - profile.min(axis=0))))
    return values, periods, amps


def _state_slice(branch: Branch):
    n = len(branch.variables)
    return slice(0, n) if n else None


def _trim_to_bounds(points, problem, free, settings):
    """Cut a run at its first point outside the bounds (that point kept).

    AUTO-07p's UZSTOP did not always stop a locus at the bound of its second
    parameter (seen with bifpy 0.3.0 when the run went to decreasing values),
    so the bounds are also enforced here.
    """
    for i, point in enumerate(points):
        for name in free:
            lo, hi = settings.bounds.get(name, (-np.inf, np.inf))
            value = _auto._param(point, problem.slots[name])
            if not lo - 1e-9 <= value <= hi + 1e-9:
                return points[: i + 1]
    return points


def _locus_closing_index(points, slots) -> int | None:
    """Index where a two-parameter curve comes back to its first point, or None."""
    if len(points) < 10:
        return None
    xy = np.array([[_auto._param(p, s) for s in slots] for p in points])
    scale = np.maximum(np.nanmax(xy, axis=0) - np.nanmin(xy, axis=0), 1e-12)
    distance = np.nanmax(np.abs(xy - xy[0]) / scale, axis=1)
    away = np.flatnonzero(distance > 0.2)
    if away.size == 0:
        return None
    back = np.flatnonzero(distance[away[0]:] < 0.01)
    return int(away[0] + back[0]) if back.size else None


@single_threaded_blas()
def continue_locus(branch: Branch, point: str, free: Sequence[str], *,
                   settings: ContinuationSettings | None = None, name: str | None = None) -> Branch:
    """Two-parameter curve of a special point (LP, HB, LPC, PD or NS).

    Parameters
    ----------
    branch : Branch
        The branch the point is on.
    point : str
        ``"HB1"``, ``"LP1"``, ``"LPC1"``, ``"PD1"``, ``"NS1"``...
    free : (str, str)
        The two parameters, e.g. ``("Iext_e", "eps")``.
    settings : ContinuationSettings, optional
        ``bounds`` on both parameters limit the curve.
    name : str, optional

    Returns
    -------
    Branch
        Kind ``LOCUS`` (``locus_of`` says which point), continued in both
        directions and joined; columns the two parameters, the state (at time
        0 for cycle loci), ``period`` (for HB loci ``2 pi / omega``; ms) and
        codimension-two points (BT, GH, CP, ZH, and R1-R4, LPPD, LPNS, PDNS,
        NSNS on cycle loci).

    Notes
    -----
    AUTO-07p's extended systems (ISW = 2). For cycle loci AUTO first
    generates starting data for the extended system, then continues it; both
    runs are made here.
    """
    settings = settings or ContinuationSettings()
    free = tuple(free)
    if len(free) != 2:
        raise ContinuationError(f"a locus needs two free parameters, got {list(free)}")
    sp = branch.point(point)
    if sp.kind not in (SpecialKind.LP, SpecialKind.HB, SpecialKind.LPC, SpecialKind.PD, SpecialKind.NS):
        raise ContinuationError(f"cannot continue a locus of {sp.kind.value} points")
    raw = _engine_point(branch, sp)
    problem = branch.engine["problem"]
    params = dict(branch.parameters)
    params.update(sp.parameters)
    for n in free:
        if n not in problem.slots:
            raise ContinuationError(f"{problem.system.name} has no parameter {n!r}")
    name = name or f"{branch.name}:{point}:locus"
    cycle = branch.kind is BranchKind.CYCLES
    engine_value = sp.details.get("engine_value")
    if not cycle and sp.located and engine_value is not None and abs(
            engine_value - sp.parameters[branch.free[0]]) > 1e-7 * (1.0 + abs(engine_value)):
        # the engine located the point poorly and a locus from there fails at once: locate it again
        better = _auto.relocate(problem, branch.engine["points"], sp.index, branch.free, settings, kind=sp.kind,
                                value=sp.parameters[branch.free[0]], state=sp.state)
        if better is not None:
            log.info("%s: the engine's %s was %.2g off in %s; started from the engine's point located again",
                     name, sp.kind.value, abs(engine_value - sp.parameters[branch.free[0]]), branch.free[0])
            raw = better
        else:
            log.warning("%s: the engine's %s is %.2g off in %s and could not be located again; the locus "
                        "starts from it", name, sp.kind.value, abs(engine_value - sp.parameters[branch.free[0]]),
                        branch.free[0])
    ips = "LC" if cycle else "EP"
    runs = []
    hit_limit = closed = False
    for step in (-abs(settings.ds), abs(settings.ds)):
        start = raw
        if cycle:
            generated = _auto.restart(problem, raw, free, settings, ips=ips, source_ips=ips, switch="locus",
                                      ds=step, with_period=True)
            labelled = [p for b in generated.branches for p in b.points if p.is_labeled]
            if not labelled:
                raise ContinuationError(f"AUTO-07p generated no starting data for the {point} locus")
            start = labelled[-1]
        slots = [problem.slots[n] for n in free]
        result = _auto.restart(problem, start, free, settings, ips=ips, source_ips=ips, switch="locus",
                               ds=step, with_period=cycle)
        raw_points = list(result.branches[0].points) if result.branches else []
        hit_limit = hit_limit or len(raw_points) >= settings.max_steps
        points = _trim_to_bounds(raw_points, problem, free, settings)
        closing = _locus_closing_index(points, slots)
        if closing is not None:
            log.info("%s: closed curve (%d points)", name, closing + 1)
            runs = [points[: closing + 1]]
            closed = True
            break
        runs.append(points)
    locus = _auto.convert_branch(runs, problem, kind=BranchKind.LOCUS, name=name, free=free, parameters=params,
                                 reverse_first=len(runs) == 2, origin=(branch.name, point), locus_of=sp.kind,
                                 mode=branch.mode, Lambda=branch.Lambda, state_slice=_state_slice(branch))
    if hit_limit and not closed:
        locus = dataclasses.replace(locus, status="max_steps")
    stopped = _auto.abnormal_end_status(runs, problem, free)
    if stopped and not closed:
        locus = dataclasses.replace(locus, status=stopped)
        log.warning("%s: %s; the curve ends there (%d points)", name, stopped, len(locus))
    if sp.kind is SpecialKind.HB and not cycle:
        locus = _with_hopf_period(locus, problem.system)
    return verify_branch(_drop_duplicate_specials(locus), problem.system)


def _with_hopf_period(locus: Branch, system) -> Branch:
    """Fill the ``period`` column of a Hopf locus with ``2 pi / omega``.

    AUTO stores the period only at labelled points; we take omega from the
    eigenvalues of the exact Jacobian at every point (the pair closest to the
    imaginary axis).
    """
    from bifnet.codegen import jacobian_function, mode_jacobian_functions

    model = system.model
    if system.kind == "augmented":
        # the critical pair belongs to the y block J(Lambda) = A + Lambda B
        A, B = mode_jacobian_functions(model)

        names = model.parameter_names

        def J(x, values):
            p = np.array([values[n] for n in names])
            return A(x, p) + complex(values["Lambda"], values.get("Lambda_imag", 0.0)) * B(x, p)
    else:
        full = jacobian_function(system)

        def J(x, values):
            return full(x, np.array([values[n] for n in system.parameter_names]))
    period = np.array(locus["period"], dtype=float)
    values = dict(locus.parameters)
    for i in range(len(locus)):
        values.update({n: float(locus[n][i]) for n in locus.free})
        x = np.array([locus[v][i] for v in locus.variables])
        period[i] = _auto._hopf_period(np.linalg.eigvals(J(x, values)), np.nan)
    columns = dict(locus.columns)
    columns["period"] = period
    return dataclasses.replace(locus, columns=columns)


def continue_from(branch: Branch, point: str, free: Sequence[str] | str | None = None, *,
                  settings: ContinuationSettings | None = None, name: str | None = None) -> Branch:
    """Start a new branch from a special point of ``branch``.

    One free parameter: cycles from HB, doubled cycles from PD. Two free
    parameters: the locus of the point.

    Examples
    --------
    >>> cycles = continue_from(equilibria, "HB1")                       # doctest: +SKIP
    >>> hopf_curve = continue_from(equilibria, "HB1", ("Iext_e", "eps"))  # doctest: +SKIP
    """
    if isinstance(free, str):
        free = (free,)
    free = tuple(free) if free else branch.free[:1]
    if len(free) == 2:
        return continue_locus(branch, point, free, settings=settings, name=name)
    return continue_cycles(branch, point, free=free, settings=settings, name=name)
