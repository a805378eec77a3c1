"""Two-parameter loci of the folds and Hopf points of full-network pattern branches.

A verified LP or HB point of a stationary pattern branch
(:mod:`bifnet.patterns.verify`) is continued in two parameters by
pseudo-arclength on its defining system (the same equations that verified it,
with both parameters free): for a fold ``z = (X, v, p1, p2)``,
``F = 0, D_X F v = 0, c . v = 1``; for a Hopf point
``z = (X, v_r, v_i, omega, p1, p2)``, ``F = 0, D_X F v_r + omega v_i = 0,
D_X F v_i - omega v_r = 0, c . v_r = 1, c . v_i = 0``. Newton's corrector uses
the exact network Jacobian and its exact derivative along the eigenvector;
derivatives in the parameters are central differences. Every accepted point
has a max-norm residual below :data:`RESIDUAL_TOLERANCE`. Zero-Hopf,
generalised-Hopf, cusp and Bogdanov-Takens points on the loci are found and solved
by :mod:`bifnet.patterns.loci_points`.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind
from bifnet.errors import ContinuationError
from bifnet.patterns.loci_points import _at_level, codimension_two_points
from bifnet.patterns.verify import NetworkDerivatives, PatternVerification, fold_system, hopf_system

log = logging.getLogger("bifnet.patterns")

#: Largest max-norm residual of the defining system at an accepted locus point.
RESIDUAL_TOLERANCE = 1e-9


def _null_vector(M, previous):
    """Unit null vector of the ``r x (r + 1)`` matrix ``M``, oriented along ``previous``."""
    A = np.vstack([M, previous[None, :]])
    rhs = np.zeros(A.shape[0])
    rhs[-1] = 1.0
    t = np.linalg.solve(A, rhs)
    t /= np.linalg.norm(t)
    return t if t @ previous >= 0 else -t


def _arclength(G, DG, z0, t0, *, ds, ds_min, ds_max, max_steps, inside, iterations=8, at=None, levels=(),
               accepted=None):
    """Pseudo-arclength continuation of ``G(z) = 0`` (one more unknown than equations) from ``z0``;
    where ``z[at]`` crosses one of ``levels``, that point is solved exactly and inserted. ``accepted(z)``,
    if given, is called at every accepted point before the next step (a system whose phase condition or
    bordering vectors move with the curve updates them there)."""
    z, t = z0.copy(), t0 / np.linalg.norm(t0)
    out, residuals, status = [], [], "max_steps"
    flags = []
    while len(out) < max_steps:
        pred = z + ds * t
        trial = pred.copy()
        ok, its, res = False, 0, np.inf
        for its in range(1, iterations + 1):
            r = G(trial)
            res = float(np.max(np.abs(r))) if np.all(np.isfinite(r)) else np.inf
            if not np.isfinite(res):
                break
            try:
                step = np.linalg.solve(np.vstack([DG(trial), t[None, :]]),
                                       -np.concatenate([r, [t @ (trial - pred)]]))
            except np.linalg.LinAlgError:
                break
            trial = trial + step
            if np.max(np.abs(step)) < 1e-12 * (1 + np.max(np.abs(trial))):
                r = G(trial)
                res = float(np.max(np.abs(r)))
                ok = res < RESIDUAL_TOLERANCE
                break
        else:
            r = G(trial)
            res = float(np.max(np.abs(r))) if np.all(np.isfinite(r)) else np.inf
            ok = res < RESIDUAL_TOLERANCE
        if not ok:
            ds /= 2
            if ds < ds_min:
                status = "no convergence"
                break
            continue
        try:
            t = _null_vector(DG(trial), t)
        except np.linalg.LinAlgError:
            status = "singular tangent"
            break
        for level in sorted(levels, key=lambda L: (L - z[at]) * np.sign(trial[at] - z[at])):
            if (z[at] - level) * (trial[at] - level) < 0:
                zl, rl = _at_level(G, DG, z, trial, at, level)
                if zl is not None:
                    out.append(zl)
                    residuals.append(rl)
                    flags.append(True)
        z = trial
        out.append(z.copy())
        residuals.append(res)
        flags.append(False)
        if accepted is not None:
            accepted(z)
        stop = inside(z)
        if stop:
            status = stop
            break
        if its <= 3:
            ds = min(ds * 1.5, ds_max)
    return out, residuals, status, flags


def continue_pattern_locus(D: NetworkDerivatives, start: PatternVerification, kind: SpecialKind, free,
                           values, *, ds=0.01, ds_min=1e-6, ds_max=0.1, max_steps=100, bounds=None,
                           levels=(), name="locus", mode=1, Lambda=0.0, variables=()) -> Branch:
    """Continue a verified fold or Hopf point of a pattern branch in two parameters.

    Parameters
    ----------
    D : NetworkDerivatives
        The network field (its base parameters: every model parameter).
    start : PatternVerification
        The verified point (full state, eigenvector and, for HB, ``omega``).
    kind : SpecialKind
        ``LP`` or ``HB``.
    free : (str, str)
        The point's own parameter first, then the second one.
    values : mapping
        Both parameters' values at the start.
    ds, ds_min, ds_max, max_steps, bounds
        Step sizes in the Euclidean norm of ``z``; steps per direction; ``bounds`` maps a
        parameter to ``(lo, hi)`` (the locus stops at the first point outside).
    levels : sequence of float
        Values of the second parameter where the locus point is solved exactly (Newton's
        method with ``p2`` fixed) and inserted as a row (``engine["level_rows"]``).

    Returns
    -------
    Branch
        Kind ``LOCUS`` (``locus_of`` = ``kind``) through the start (row ``engine["start_index"]``),
        columns: both parameters, the regional mean of every variable, ``omega`` (rad/ms) and
        ``frequency_hz`` (HB), ``residual``, ``stable`` (not evaluated), ``code``, ``label``;
        full states in ``engine["states"]``.

    Raises
    ------
    ContinuationError
        If no point converges next to the start.

    Examples
    --------
    >>> branch = stationary_pattern_branch(model, operator, params, "b", x, 68, settings)   # doctest: +SKIP
    >>> D = NetworkDerivatives(model, operator, params)                                      # doctest: +SKIP
    >>> lp = branch.point("LP1")                                                             # doctest: +SKIP
    >>> locus = continue_pattern_locus(D, branch.engine["solutions"]["LP1"], lp.kind, ("b", "eps"),
    ...                                {"b": lp.parameters["b"], "eps": 1.0}, levels=[0.8])  # doctest: +SKIP
    """
    from bifnet._blas import single_threaded_blas

    p1, p2 = free
    d = D.dimension
    N, n = D.shape
    bounds = bounds or {}
    started = time.perf_counter()
    if kind is SpecialKind.LP:
        v = np.real(start.vector)
        c = v / float(v @ v)
        G, DG = fold_system(D, {}, [p1, p2], c)
        z0 = np.concatenate([start.X, v / float(c @ v), [values[p1], values[p2]]])
        at_p = 2 * d
    elif kind is SpecialKind.HB:
        v = np.asarray(start.vector, dtype=complex)
        c = np.real(v) / float(np.real(v) @ np.real(v))
        v = v / complex(c @ v)
        G, DG = hopf_system(D, {}, [p1, p2], c)
        z0 = np.concatenate([start.X, v.real, v.imag, [start.omega, values[p1], values[p2]]])
        at_p = 3 * d + 1
    else:
        raise ContinuationError(f"no two-parameter locus of a {kind.value} point of a pattern branch (LP or HB)")

    def inside(z):
        """``""`` inside the bounds, else why the locus stops there."""
        for k, nm in enumerate((p1, p2)):
            lo, hi = bounds.get(nm, (-np.inf, np.inf))
            if not lo <= z[at_p + k] <= hi:
                return "bound"
        if kind is SpecialKind.HB and abs(z[3 * d]) < 1e-6 * max(1.0, abs(start.omega)):
            return "omega -> 0 (a Bogdanov-Takens point?)"
        return ""

    with single_threaded_blas():
        r0 = float(np.max(np.abs(G(z0))))
        if not r0 < RESIDUAL_TOLERANCE:
            raise ContinuationError(f"{name}: the start is not a solution of the {kind.value} system "
                                    f"(residual {r0:.2g})")
        e = np.zeros(z0.size)
        e[at_p + 1] = 1.0
        try:
            t0 = _null_vector(DG(z0), e)
        except np.linalg.LinAlgError:
            raise ContinuationError(f"{name}: the {kind.value} system is singular at the start (a codimension-two "
                                    f"point?); no locus") from None
        halves = [_arclength(G, DG, z0, sign * t0, ds=ds, ds_min=ds_min, ds_max=ds_max, max_steps=max_steps,
                             inside=inside, at=at_p + 1, levels=tuple(levels)) for sign in (1.0, -1.0)]
    (za, ra, sa, fa), (zb, rb, sb, fb) = halves
    if not za and not zb:
        raise ContinuationError(f"{name}: no locus point converged next to the start "
                                f"({p1} = {values[p1]:.8g}, {p2} = {values[p2]:.8g})")
    rows = np.array(zb[::-1] + [z0] + za)
    residuals = np.array(rb[::-1] + [r0] + ra)
    level_rows = [int(k) for k in np.flatnonzero(np.array(fb[::-1] + [False] + fa))]
    states = rows[:, :d].reshape(-1, N, n)
    columns = {p1: rows[:, at_p], p2: rows[:, at_p + 1]}
    for j, var in enumerate(variables):
        columns[var] = states[:, :, j].mean(axis=1)
    if kind is SpecialKind.HB:
        omega = np.abs(rows[:, 3 * d])
        columns["omega"] = omega
        columns["frequency_hz"] = omega / (2 * math.pi) * 1000.0
    k = len(rows)
    columns.update({"residual": residuals, "stable": np.full(k, -1), "code": np.zeros(k, dtype=int),
                    "label": np.zeros(k, dtype=int)})
    with single_threaded_blas():
        special, quantities = codimension_two_points(D, G, DG, rows, kind, (p1, p2), at_p, len(zb))
    status = f"+: {sa}, -: {sb}"
    log.info("  %s: %d points of the %s locus in (%s, %s) (%s), %.1f s", name, k, kind.value, p1, p2, status,
             time.perf_counter() - started)
    return Branch(kind=BranchKind.LOCUS, name=name, free=(p1, p2), columns=columns, special_points=tuple(special),
                  parameters={**D.parameters, **values}, origin=None, locus_of=kind, mode=int(mode),
                  Lambda=Lambda, status=status, variables=tuple(variables),
                  engine={"states": states, "start_index": len(zb), "rows": rows, "level_rows": level_rows,
                          **quantities})
