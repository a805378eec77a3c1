"""Transverse bifurcation curves of homogeneous cycles, traced by continuation.

A sign change of a mode's Floquet growth rate along a homogeneous cycle branch
(found on a level by the ``transverse`` step) is located exactly on the
augmented system with the true flow (:func:`bifnet.systems.augmented_system`):
its cycles on ``y = x`` are the homogeneous ones, and AUTO-07p (ISP = 2)
reports the period doublings, tori and folds of both blocks along them. The
point of the expected kind nearest the crossing is kept when its critical
multiplier belongs to the mode (Floquet multipliers of ``J(Lambda)``) rather
than to the homogeneous block; AUTO then continues it in two parameters.

This costs tens of seconds per curve (a 12-dimensional boundary-value
problem), so the ``transverse`` step does it only for the modes listed in
``cycle_curves``.
"""

from __future__ import annotations

import logging

import numpy as np

from bifnet.continuation.branch import Branch, SpecialKind
from bifnet.continuation.equilibria import continue_equilibria
from bifnet.continuation.restarts import continue_cycles, continue_locus
from bifnet.continuation.settings import ContinuationSettings
from bifnet.model import NodeModel
from bifnet.systems import augmented_system

log = logging.getLogger("bifnet.transverse")

KINDS = {"PD": SpecialKind.PD, "NS": SpecialKind.NS, "LPC": SpecialKind.LPC}
CYCLE_STEPS = 240   #: steps of the augmented cycle branch
MESH = 30           #: NTST of the augmented cycles and their loci
LOCUS_STEPS = 150


def _critical_distance(multipliers, kind: SpecialKind, drop_trivial: bool) -> float:
    """How far the multipliers are from a bifurcation of ``kind``."""
    mu = np.asarray(multipliers, dtype=complex)
    if drop_trivial:
        mu = np.delete(mu, np.argmin(np.abs(mu - 1)))
    if kind is SpecialKind.PD:
        return float(np.min(np.abs(mu + 1)))
    if kind is SpecialKind.LPC:
        return float(np.min(np.abs(mu - 1)))
    pairs = mu[np.abs(mu.imag) > 1e-9]
    return float(np.min(np.abs(np.abs(pairs) - 1))) if pairs.size else np.inf


def belongs_to_mode(model: NodeModel, cycles: Branch, index: int, Lambda: float, kind: SpecialKind) -> bool:
    """Is the critical multiplier at row ``index`` the mode's rather than the homogeneous one's?"""
    from bifnet.transverse.floquet import HomogeneousCycle, cycle_from_branch, floquet_dispersion

    cycle = cycle_from_branch(cycles, index)
    cycle = HomogeneousCycle(parameters={k: v for k, v in cycle.parameters.items() if k in model.parameters},
                             period=cycle.period, x0=np.asarray(cycle.x0)[: model.n_variables])
    fd = floquet_dispersion(model, cycle, np.array([model.coupling.uniform_eigenvalue, Lambda]))
    return _critical_distance(fd.multipliers[1], kind, False) < _critical_distance(fd.multipliers[0], kind, True)


def augmented_cycles(model: NodeModel, level_branch: Branch, hopf: str, Lambda: float,
                     settings: ContinuationSettings, *, name: str) -> Branch | None:
    """The homogeneous cycles born at ``hopf``, computed on the augmented system of ``Lambda``."""
    system = augmented_system(model, "flow")
    p1 = level_branch.free[0]
    hb = level_branch.point(hopf)
    i = hb.index
    j = max(i - 2, 0)
    params = dict(level_branch.parameters)
    params[p1] = float(level_branch[p1][j])
    params["Lambda"] = float(Lambda)
    x = np.array([level_branch[v][j] for v in level_branch.variables])
    ends = level_branch[p1][[j, min(i + 2, len(level_branch) - 1)]]
    lo, hi = float(np.min(ends)), float(np.max(ends))
    width = max(hi - lo, 1e-6)
    local = settings.replace(bounds={**settings.bounds, p1: (lo - 0.1 * width, hi + 0.1 * width)},
                             ds=max(width / 20, 2 * settings.ds_min), ds_max=max(width / 5, 2 * settings.ds_min),
                             max_steps=80)
    equilibria = continue_equilibria(system, params, p1, x0=np.concatenate([x, x]), settings=local,
                                     name=f"{name}:equilibria", settle_time=0.0)
    from bifnet.transverse.curves import _block_of

    hopfs = [sp for sp in equilibria.points_of_kind(SpecialKind.HB)
             if _block_of(model, sp.state, {**params, **sp.parameters}, Lambda) == "homogeneous"]
    if not hopfs:
        return None
    start = min(hopfs, key=lambda sp: abs(sp.parameters[p1] - hb.parameters[p1]))
    return continue_cycles(equilibria, start.name, settings=settings.replace(max_steps=CYCLE_STEPS, ntst=MESH),
                           name=f"{name}:cycles")


def trace_cycle_curve(model: NodeModel, cycles: Branch, Lambda: float, kind: str, value: float,
                      free: tuple[str, str], settings: ContinuationSettings, *, name: str) -> Branch | None:
    """Continue the transverse ``kind`` point of ``cycles`` nearest ``value`` in ``free``.

    Returns None when AUTO reported no point of that kind belonging to the mode
    within 5 % of the range of the first parameter.
    """
    p1 = free[0]
    target = KINDS[kind]
    span = np.ptp(settings.bounds[p1]) if p1 in settings.bounds else 1.0
    candidates = sorted((sp for sp in cycles.points_of_kind(target) if abs(sp.parameters[p1] - value) < 0.05 * span),
                        key=lambda sp: abs(sp.parameters[p1] - value))
    for sp in candidates:
        if belongs_to_mode(model, cycles, sp.index, Lambda, target):
            return continue_locus(cycles, sp.name, free,
                                  settings=settings.replace(max_steps=LOCUS_STEPS, ntst=MESH), name=name)
    return None
