"""Codimension-two points on two-parameter loci of pattern folds and Hopf points.

Found between the rows of a locus computed by :mod:`bifnet.patterns.loci` and solved
on the full network:

* **ZH** (zero-Hopf, both loci): detected by a test function (``sign det D_X F`` on a
  Hopf locus; the number of eigenvalues with positive real part on a fold locus) and
  solved from the zero-Hopf system (:func:`bifnet.patterns.verify.solve_pattern_zero_hopf`);
* **GH** (generalised Hopf, Hopf loci), **CP** (cusp) and **BT** (Bogdanov-Takens, fold
  loci): roots of ``l1``, ``w . D_X^2 F(v, v)`` and ``w . v / |v|`` along the locus, located
  by Brent's method over exact locus points at fixed values of one coordinate
  (:func:`_root_between_rows`);
* **BT** at the end of a Hopf locus where ``omega`` falls to zero: solved from the
  Bogdanov-Takens system ``F = 0, D_X F v0 = 0, D_X F v1 = v0`` (:func:`solve_pattern_bogdanov_takens`).

See ``docs/engine.md`` (two-parameter loci of pattern folds and Hopf points).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from bifnet.continuation.branch import SpecialKind, SpecialPoint
from bifnet.errors import ContinuationError
from bifnet.patterns.verify import RESIDUAL_TOLERANCE, NetworkDerivatives

log = logging.getLogger("bifnet.patterns")


def codimension_two_points(D: NetworkDerivatives, G, DG, rows, kind, names, at_p, start_index
                           ) -> tuple[list[SpecialPoint], dict]:
    """Every codimension-two point on a locus (rows ``z`` of its system ``G``, ``DG``; parameters at
    ``z[at_p]``, ``z[at_p + 1]``); returns ``(points, quantities)``, the test quantities at the rows
    (``l1`` on Hopf loci; ``cusp_coefficient``, ``bt_coefficient`` on fold loci)."""
    d = D.dimension
    N, n = D.shape
    states = rows[:, :d].reshape(-1, N, n)
    zero_hopf = _zero_hopf_points(D, rows, states, kind, names, at_p)
    extra, quantities = _degenerate_points(D, G, DG, rows, kind, names, at_p, zero_hopf)
    points = zero_hopf + extra
    if kind is SpecialKind.HB:
        found = [p for p in points if p.kind is SpecialKind.BT]
        points += _hopf_locus_ends(D, rows, names, at_p, start_index, found)
    return sorted(points, key=lambda p: p.index), quantities


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


def _zero_hopf_points(D: NetworkDerivatives, rows, states, kind, names, at_p) -> list[SpecialPoint]:
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


def _degenerate_points(D: NetworkDerivatives, G, DG, rows, kind, names, at_p, zero_hopf
                       ) -> tuple[list[SpecialPoint], dict]:
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


# ---------------------------------------------------------------------------
# Bogdanov-Takens points: the end of a Hopf locus where omega falls to zero

BT_SYSTEM_METHOD = ("newton (full network): F = 0, DX v0 = 0, DX v1 = v0, c.v0 = 1, c.v1 = 0 in two parameters "
                    "(exact DX, D2X and DpF)")


def bogdanov_takens_system(D: NetworkDerivatives, names, c):
    """``G``, ``DG`` of the Bogdanov-Takens system in ``z = (X, v0, v1, p1, p2)`` (square, ``3 d + 2``): a zero
    eigenvalue with a Jordan chain, ``D_X F v0 = 0``, ``D_X F v1 = v0``, ``c . v0 = 1``, ``c . v1 = 0``."""
    d = D.dimension
    p1, p2 = names

    def unpack(z):
        return z[:d], z[d:2 * d], z[2 * d:3 * d], {p1: float(z[3 * d]), p2: float(z[3 * d + 1])}

    def G(z):
        X, v0, v1, vals = unpack(z)
        J = D.J(X, vals)
        return np.concatenate([D.F(X, vals), J @ v0, J @ v1 - v0, [c @ v0 - 1.0, c @ v1]])

    def DG(z):
        X, v0, v1, vals = unpack(z)
        J = D.J(X, vals)
        M = np.zeros((3 * d + 2, 3 * d + 2))
        M[:d, :d] = J
        M[d:2 * d, :d], M[d:2 * d, d:2 * d] = D.D2v(X, vals, v0), J
        M[2 * d:3 * d, :d], M[2 * d:3 * d, d:2 * d], M[2 * d:3 * d, 2 * d:3 * d] = D.D2v(X, vals, v1), -np.eye(d), J
        M[3 * d, d:2 * d] = c
        M[3 * d + 1, 2 * d:3 * d] = c
        for k, nm in enumerate(names):
            dJ = D.dJ(X, vals, nm)
            M[:d, 3 * d + k] = D.dF(X, vals, nm)
            M[d:2 * d, 3 * d + k] = dJ @ v0
            M[2 * d:3 * d, 3 * d + k] = dJ @ v1
        return M

    return G, DG


def solve_pattern_bogdanov_takens(D: NetworkDerivatives, X, values, names) -> dict:
    """Newton's method on the Bogdanov-Takens system from a guess (``v0`` the right singular vector of the
    smallest singular value of ``D_X F``, ``v1`` the least-squares solution of ``D_X F v1 = v0``, ``c.v1 = 0``).
    Returns ``ok``, ``residual``, ``method``, ``values`` (both parameters), ``X``, ``eigenvalues``, ``reason``."""
    from bifnet.patterns.verify import newton

    X = np.asarray(X, dtype=float).ravel()
    d = X.size
    J = D.J(X, values)
    v0 = np.linalg.svd(J)[2][-1]
    c = v0.copy()
    v1 = np.linalg.lstsq(np.vstack([J, c[None, :]]), np.concatenate([v0, [0.0]]), rcond=None)[0]
    G, DG = bogdanov_takens_system(D, tuple(names), c)
    z, res, ok = newton(G, DG, np.concatenate([X, v0, v1, [values[names[0]], values[names[1]]]]))
    vals = {names[0]: float(z[3 * d]), names[1]: float(z[3 * d + 1])}
    ev = np.linalg.eigvals(D.J(z[:d], vals)) if np.all(np.isfinite(z)) else np.empty(0, complex)
    return {"ok": ok, "residual": res, "method": BT_SYSTEM_METHOD, "values": vals, "X": z[:d].copy(),
            "eigenvalues": ev,
            "reason": "" if ok else f"Newton's method on the Bogdanov-Takens system did not converge "
                                    f"(residual {res:.2g})"}


def _hopf_locus_ends(D: NetworkDerivatives, rows, names, at_p, start_index, found) -> list[SpecialPoint]:
    """BT points where the Hopf locus's ``omega`` falls to zero: at an end of the locus with ``|omega|`` below a
    quarter of its value at the start and falling towards the end, or between rows where ``omega`` changes
    sign. Solved by :func:`solve_pattern_bogdanov_takens` from that row; ``located`` only when Newton's method
    converges within 1.5 times the distance (in state and parameters) from that row back to the row where
    ``|omega|`` was twice as large (near a BT point the state and parameters move like ``omega^2``). An end
    whose solve fails is no evidence of a BT point and is only logged; a sign change of ``omega`` that fails
    is reported with ``located = False``. A point solved twice (end and sign change) is reported once."""
    d = D.dimension
    N, n = D.shape
    omega = rows[:, 3 * d]
    w0 = abs(omega[start_index])
    candidates = []   # (row, direction back along the locus)
    for end, back in ((0, 1), (len(rows) - 1, -1)):
        k = end + 2 * back
        if 0 <= k < len(rows) and abs(omega[end]) < 0.25 * w0 and abs(omega[end]) < abs(omega[end + back]) \
                < abs(omega[k]):
            candidates.append((end, back, False))
    for i in range(len(rows) - 1):
        if omega[i] * omega[i + 1] < 0:
            candidates.append((i, -1, True) if abs(omega[i]) <= abs(omega[i + 1]) else (i + 1, 1, True))
    out = []

    def point(z):
        return np.concatenate([z[:d], z[at_p:at_p + 2]])

    for row, back, crossing in candidates:
        k = row
        while 0 <= k + back < len(rows) and abs(omega[k]) < 2 * abs(omega[row]):
            k += back
        reach = max(float(np.linalg.norm(point(rows[k]) - point(rows[row]))), 1e-9)
        values = {names[0]: float(rows[row][at_p]), names[1]: float(rows[row][at_p + 1])}
        result = solve_pattern_bogdanov_takens(D, rows[row][:d], values, names)
        name = f"BT{len(found) + len(out) + 1}"
        details = {"found_by": "omega changes sign between rows" if crossing else "omega falls to zero at the end "
                   "of the Hopf locus", "omega_at_row": float(abs(omega[row]))}
        if result["ok"]:
            got = np.concatenate([result["X"], [result["values"][names[0]], result["values"][names[1]]]])
            if float(np.linalg.norm(got - point(rows[row]))) > 1.5 * reach:
                result = {**result, "ok": False, "reason": f"Newton's method converged to ({names[0]}, {names[1]}) "
                                                           f"= ({got[-2]:.8g}, {got[-1]:.8g}), away from row {row}"}
        if result["ok"] and any(p.located and abs(p.parameters[names[0]] - result["values"][names[0]]) < 1e-9
                                and abs(p.parameters[names[1]] - result["values"][names[1]]) < 1e-9 for p in out):
            continue
        if not result["ok"] and not crossing:
            log.info("  no BT point solved from the end of the Hopf locus at row %d (|omega| = %.3g): %s", row,
                     abs(omega[row]), result["reason"])
            continue
        if result["ok"]:
            out.append(SpecialPoint(kind=SpecialKind.BT, index=row, parameters=dict(result["values"]),
                                    state=tuple(float(v) for v in result["X"].reshape(N, n).mean(axis=0)),
                                    eigenvalues=tuple(complex(e) for e in result["eigenvalues"]), located=True,
                                    name=name, residual=float(result["residual"]), verification=result["method"],
                                    details=details))
        else:
            log.warning("  %s near %s = %.6g, %s = %.6g failed: %s", name, names[0], values[names[0]], names[1],
                        values[names[1]], result["reason"])
            out.append(SpecialPoint(kind=SpecialKind.BT, index=row, parameters=values, located=False, name=name,
                                    residual=float(result["residual"]), verification=result["method"],
                                    details={**details, "reason": result["reason"]}))
    return out
