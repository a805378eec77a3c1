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
has a max-norm residual below :data:`RESIDUAL_TOLERANCE`. Zero-Hopf points on
either locus are detected between rows and solved from the zero-Hopf system
(:func:`bifnet.patterns.verify.solve_pattern_zero_hopf`). Generalised Hopf points
(the first Lyapunov coefficient ``l1`` of the full network changes sign) on Hopf
loci, and cusps (the fold's quadratic coefficient ``w . D_X^2 F(v, v)`` changes
sign) and Bogdanov-Takens points (``w . v`` changes sign: a second zero eigenvalue)
on fold loci, are located by Brent's method on that quantity over exact locus
points solved at fixed values of the coordinate that changes most between the two
bracketing rows (:func:`_root_between_rows`).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind, SpecialPoint
from bifnet.errors import ContinuationError
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


def _at_level(G, DG, z_a, z_b, at, level, iterations=12):
    """The point of ``G = 0`` with ``z[at] = level`` between two accepted points (Newton's method)."""
    s = (level - z_a[at]) / (z_b[at] - z_a[at])
    z = (1 - s) * z_a + s * z_b
    e = np.zeros(z.size)
    e[at] = 1.0
    for _ in range(iterations):
        r = G(z)
        try:
            step = np.linalg.solve(np.vstack([DG(z), e[None, :]]), -np.concatenate([r, [z[at] - level]]))
        except np.linalg.LinAlgError:
            return None, np.inf
        z = z + step
        if np.max(np.abs(step)) < 1e-13 * (1 + np.max(np.abs(z))):
            break
    res = float(np.max(np.abs(G(z))))
    return (z, res) if res < RESIDUAL_TOLERANCE else (None, res)


def _arclength(G, DG, z0, t0, *, ds, ds_min, ds_max, max_steps, inside, iterations=8, at=None, levels=()):
    """Pseudo-arclength continuation of ``G(z) = 0`` (one more unknown than equations) from ``z0``;
    where ``z[at]`` crosses one of ``levels``, that point is solved exactly and inserted."""
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
    from bifnet.patterns.equilibria import one_blas_thread

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

    with one_blas_thread():
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
    with one_blas_thread():
        special = _codimension_two(D, rows, states, kind, (p1, p2), at_p, variables)
        extra, quantities = _degenerate_points(D, G, DG, rows, kind, (p1, p2), at_p, special)
        special += extra
    status = f"+: {sa}, -: {sb}"
    log.info("  %s: %d points of the %s locus in (%s, %s) (%s), %.1f s", name, k, kind.value, p1, p2, status,
             time.perf_counter() - started)
    return Branch(kind=BranchKind.LOCUS, name=name, free=(p1, p2), columns=columns, special_points=tuple(special),
                  parameters={**D.parameters, **values}, origin=None, locus_of=kind, mode=int(mode),
                  Lambda=Lambda, status=status, variables=tuple(variables),
                  engine={"states": states, "start_index": len(zb), "rows": rows, "level_rows": level_rows,
                          **quantities})


def _codimension_two(D: NetworkDerivatives, rows, states, kind, names, at_p, variables) -> list[SpecialPoint]:
    """Zero-Hopf points on a locus, detected between rows and solved from their defining system.

    On a Hopf locus a real eigenvalue crosses zero where the sign of ``det D_X F`` changes (the pairs
    contribute positive factors); on a fold locus a complex pair crosses the imaginary axis where the
    number of eigenvalues with positive real part (the fold's zero one left out) changes by two. Each detection is solved by
    :func:`bifnet.patterns.verify.solve_pattern_zero_hopf` from the nearer row; ``located`` only when
    Newton's method converges within the two rows' stretch of both parameters.
    """
    from bifnet.patterns.verify import solve_pattern_zero_hopf

    p1, p2 = names
    d = D.dimension
    N, n = D.shape
    test = []
    for z in rows:
        J = D.J(z[:d], {p1: float(z[at_p]), p2: float(z[at_p + 1])})
        if kind is SpecialKind.HB:
            test.append(float(np.linalg.slogdet(J)[0]))
        else:   # eigenvalues with positive real part, the fold's zero eigenvalue left out
            ev = np.linalg.eigvals(J)
            ev = np.delete(ev, int(np.argmin(np.abs(ev))))
            test.append(float(np.sum(ev.real > 0)))
    out = []
    for i in range(len(rows) - 1):
        if test[i] == test[i + 1] or (kind is SpecialKind.LP and abs(test[i] - test[i + 1]) != 2):
            continue
        result = None
        for guess in (rows[i], rows[i + 1], 0.5 * (rows[i] + rows[i + 1])):
            values = {p1: float(guess[at_p]), p2: float(guess[at_p + 1])}
            trial = solve_pattern_zero_hopf(D, guess[:d], values, names)
            if trial["ok"] or result is None:
                result = trial
            if trial["ok"] and _between(trial, rows[i], rows[i + 1], at_p, names):
                break
        name = f"ZH{len(out) + 1}"
        if result["ok"] and not _between(result, rows[i], rows[i + 1], at_p, names):
            got = (result["values"][p1], result["values"][p2])
            result = {**result, "ok": False, "reason": f"Newton's method converged to ({p1}, {p2}) = "
                                                       f"({got[0]:.8g}, {got[1]:.8g}), away from rows {i}, {i + 1}"}
        details = {"found_by": "test function sign change between rows"}
        if result["ok"]:
            means = result["X"].reshape(N, n).mean(axis=0)
            out.append(SpecialPoint(kind=SpecialKind.ZH, index=i, parameters=dict(result["values"]),
                                    state=tuple(float(v) for v in means),
                                    eigenvalues=tuple(complex(e) for e in result["eigenvalues"]),
                                    period=2 * math.pi / result["omega"], located=True, name=name,
                                    residual=float(result["residual"]), verification=result["method"],
                                    details=details))
        else:
            log.warning("  %s near %s = %.6g, %s = %.6g failed verification: %s", name, p1, values[p1], p2,
                        values[p2], result["reason"])
            out.append(SpecialPoint(kind=SpecialKind.ZH, index=i, parameters=values, located=False, name=name,
                                    residual=float(result["residual"]), verification=result["method"],
                                    details={**details, "reason": result["reason"]}))
    return out


def _between(result, a, b, at_p, names) -> bool:
    """Is ``(X, p1, p2)`` of ``result`` within 1.5 steps (in state and parameters) of rows ``a``, ``b``?"""
    d = result["X"].size

    def point(z):
        return np.concatenate([z[:d], z[at_p:at_p + 2]])

    got = np.concatenate([result["X"], [result["values"][names[0]], result["values"][names[1]]]])
    reach = max(float(np.linalg.norm(point(b) - point(a))), 1e-9)
    return min(float(np.linalg.norm(got - point(a))), float(np.linalg.norm(got - point(b)))) <= 1.5 * reach


# ---------------------------------------------------------------------------
# generalised Hopf, cusp and Bogdanov-Takens points: roots of a quantity along the locus

GH_METHOD = ("newton (full network): Hopf points of the locus at fixed z_j, Brent on the first Lyapunov "
             "coefficient l1 (exact DX, D2X, D3X)")
CP_METHOD = ("newton (full network): fold points of the locus at fixed z_j, Brent on w.D2X F(v, v) "
             "(J v = 0, w^T J = 0, w continued)")
BT_METHOD = ("newton (full network): fold points of the locus at fixed z_j, Brent on w.v/|v| "
             "(J v = 0, w^T J = 0, w continued: a second zero eigenvalue)")


def _unpack(z, d, at_p, names):
    return z[:d], {names[0]: float(z[at_p]), names[1]: float(z[at_p + 1])}


def _left_null(D, z, d, at_p, names, reference):
    """Unit left null vector ``w`` of ``D_X F`` at a fold locus point, oriented along ``reference``."""
    X, vals = _unpack(z, d, at_p, names)
    w = np.linalg.svd(D.J(X, vals))[0][:, -1]
    return w if reference is None or float(w @ reference) >= 0 else -w


def _fold_quantities(D, z, d, at_p, names, w):
    """``(w . D_X^2 F(v, v), w . v / |v|)`` at a fold locus point (``v = z[d:2d]``)."""
    X, vals = _unpack(z, d, at_p, names)
    v = z[d:2 * d]
    return float(w @ D.multilinear(X, vals, v, v)), float(w @ v) / float(np.linalg.norm(v))


def _lyapunov_at(D, z, d, at_p, names):
    from bifnet.patterns.verify import pattern_lyapunov_coefficient

    X, vals = _unpack(z, d, at_p, names)
    try:
        return pattern_lyapunov_coefficient(D, X, vals, abs(float(z[3 * d])))
    except (np.linalg.LinAlgError, ValueError):
        return math.nan


def _root_between_rows(G, DG, za, zb, coordinates, quantity):
    """Brent's method on ``quantity(z)`` over exact locus points between rows ``za`` and ``zb``.

    The points are solved by Newton's method on the locus system with ``z[j]`` fixed, ``j`` the
    coordinate among ``coordinates`` (state components and both parameters) that changes most
    between the rows. Returns ``(z, value, residual)`` or ``None`` when a point is not solved or
    the quantity does not change sign on the solved points."""
    from scipy.optimize import brentq

    j = int(max(coordinates, key=lambda k: abs(zb[k] - za[k])))
    if za[j] == zb[j]:
        return None
    last = {}

    def g(level):
        z, res = _at_level(G, DG, za, zb, j, level)
        if z is None:
            raise ContinuationError("a point of the locus was not solved")
        value = quantity(z)
        if not np.isfinite(value):
            raise ContinuationError("the quantity is not finite")
        last["out"] = (z, value, res)
        return value

    try:
        level = brentq(g, min(za[j], zb[j]), max(za[j], zb[j]), xtol=1e-15, rtol=4 * np.finfo(float).eps)
        g(level)
    except (ContinuationError, ValueError):
        return None
    return last["out"]


def _degenerate_points(D: NetworkDerivatives, G, DG, rows, kind, names, at_p, zero_hopf) -> list[SpecialPoint]:
    """GH points on a Hopf locus, CP and BT points on a fold locus, where their test quantity changes
    sign between neighbouring rows (``l1``; ``w . D_X^2 F(v, v)``; ``w . v / |v|``, ``w`` the left null
    vector with its sign continued along the rows). Each is located by :func:`_root_between_rows`;
    its residual is the larger of the locus system's and ``|quantity|`` at the root relative to its
    larger size at the two rows. A sign change of ``l1`` between rows with a zero-Hopf point
    (``l1`` has a pole there) is no GH point and is skipped."""
    p1, p2 = names
    d = D.dimension
    N, n = D.shape
    coordinates = list(range(d)) + [at_p, at_p + 1]
    tests = {}
    if kind is SpecialKind.HB:
        zh_rows = {p.index for p in zero_hopf}
        tests[SpecialKind.GH] = (np.array([_lyapunov_at(D, z, d, at_p, names) for z in rows]), GH_METHOD)
        quantities = {"l1": tests[SpecialKind.GH][0]}
    else:
        zh_rows = set()
        ws, cp, bt = [], [], []
        for z in rows:
            ws.append(_left_null(D, z, d, at_p, names, ws[-1] if ws else None))
            a, b = _fold_quantities(D, z, d, at_p, names, ws[-1])
            cp.append(a)
            bt.append(b)
        tests[SpecialKind.CP] = (np.array(cp), CP_METHOD)
        tests[SpecialKind.BT] = (np.array(bt), BT_METHOD)
        quantities = {"cusp_coefficient": tests[SpecialKind.CP][0], "bt_coefficient": tests[SpecialKind.BT][0]}
    out = []
    for sk, (values, method) in tests.items():
        values = np.asarray(values, dtype=float)
        found = 0
        for i in range(len(rows) - 1):
            qa, qb = values[i], values[i + 1]
            if not (np.isfinite(qa) and np.isfinite(qb)) or not qa * qb < 0:
                continue
            if i in zh_rows:
                continue
            if sk is SpecialKind.GH:
                quantity = lambda z: _lyapunov_at(D, z, d, at_p, names)  # noqa: E731
            else:
                w_ref = ws[i]
                pick = 0 if sk is SpecialKind.CP else 1
                quantity = (lambda z, w_ref=w_ref, pick=pick:   # noqa: E731
                            _fold_quantities(D, z, d, at_p, names, _left_null(D, z, d, at_p, names, w_ref))[pick])
            found += 1
            name = f"{sk.value}{found}"
            ends = {p1: float(rows[i][at_p]), p2: float(rows[i][at_p + 1])}
            details = {"found_by": "test function sign change between rows", "quantity_at_rows": [float(qa), float(qb)]}
            root = _root_between_rows(G, DG, rows[i], rows[i + 1], coordinates, quantity)
            if root is None:
                reason = "no root solved between the rows"
                log.warning("  %s near %s = %.6g, %s = %.6g failed: %s", name, p1, ends[p1], p2, ends[p2], reason)
                out.append(SpecialPoint(kind=sk, index=i, parameters=ends, located=False, name=name,
                                        residual=math.inf, verification=method, details={**details, "reason": reason}))
                continue
            z, value, res = root
            residual = float(max(res, abs(value) / max(abs(qa), abs(qb), 1e-300)))
            X, vals = _unpack(z, d, at_p, names)
            ok = residual < RESIDUAL_TOLERANCE
            details["quantity"] = float(value)
            if not ok:
                details["reason"] = f"the quantity is {value:.2g} at the root found"
            period = 2 * math.pi / abs(float(z[3 * d])) if kind is SpecialKind.HB else float("nan")
            out.append(SpecialPoint(kind=sk, index=i, parameters=vals,
                                    state=tuple(float(v) for v in X.reshape(N, n).mean(axis=0)),
                                    eigenvalues=tuple(complex(e) for e in np.linalg.eigvals(D.J(X, vals))),
                                    period=period, located=ok, name=name, residual=residual, verification=method,
                                    details=details))
    return out, quantities
