"""Verification of special points: every point the engine reports is solved
again from its defining system by bifnet's own Newton method.

* **LP** (fold of equilibria): the standard extended system
  ``f(x, a) = 0``, ``J(x, a) v = 0``, ``c . v = 1`` in ``(x, a, v)``;
* **HB** (Hopf point): ``f = 0``, ``J v_r + w v_i = 0``, ``J v_i - w v_r = 0``,
  ``c . v_r = 1``, ``c . v_i = 0`` in ``(x, a, w, v_r, v_i)``;
* **BP**: as LP (a zero eigenvalue);
* **LPC, PD, NS** (homogeneous cycles): shooting with bifnet's compiled
  DOP853 and its own monodromy matrix, ``phi_T(x0) - x0 = 0``, a phase
  condition and the multiplier condition (a bordered determinant of
  ``[[M - I, f], [f^T, 0]]`` for LPC, of ``M + I`` for PD, ``|mu|^2 = 1`` of
  the critical complex pair for NS), by Newton's method in ``(x0, T, a)``;
* codimension-two points on loci: the eigenvalue conditions are checked at
  the engine's point (BT: two zero eigenvalues; ZH: a zero eigenvalue and an
  imaginary pair; CP: a zero eigenvalue; HH: two imaginary pairs); GH on
  homogeneous Hopf loci: the first Lyapunov coefficient ``l1`` (exact second
  and third derivatives) changes sign between the neighbouring rows. Every
  verified Hopf point of homogeneous equilibria gets ``l1`` and its
  criticality (``super`` for ``l1 < 0``, ``sub`` for ``l1 > 0``).

The Jacobians of the extended systems are exact (sympy derivatives of the
model, including the second derivatives ``D_x (J v)``). A point passes when
Newton's method converges (max-norm residual below :data:`RESIDUAL_TOLERANCE`)
to a point within the stretch of the branch around the engine's estimate.
The polished values replace the engine's; a point that fails is reported
with ``located = False`` and the reason. See ``docs/engine.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Mapping

import numpy as np
import sympy

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind, SpecialPoint
from bifnet.errors import BifnetError
from bifnet.systems import SymbolicSystem

log = logging.getLogger("bifnet.continuation")

#: Largest max-norm residual of a defining system that counts as solved.
RESIDUAL_TOLERANCE = 1e-9

#: Shooting solves per cycle branch (verification and accounting together); later points are
#: "not verified". A count, not seconds, so that a run's results do not depend on the machine's load.
CYCLE_BUDGET = 60

#: |mu_trivial - 1| of the engine's multipliers above which its mesh is too coarse to trust a cycle point.
TRIVIAL_WARNING = 1e-3

_ZERO_EIGEN = 1e-6  #: |Re| (relative) below which an eigenvalue counts as on the axis (codim-2 checks)


@dataclasses.dataclass(frozen=True)
class Verification:
    """Outcome of solving a special point's defining system.

    Attributes
    ----------
    ok : bool
        Newton's method converged close to the engine's estimate.
    residual : float
        Max-norm residual of the defining system at the returned point.
    method : str
        Which defining system was solved.
    parameters : dict
        Polished free-parameter values (the engine's when not ``ok``).
    state : ndarray
        Polished state (equilibria) or state at time 0 (cycles).
    eigenvalues : ndarray
        Eigenvalues (equilibria) or Floquet multipliers (cycles) there.
    period : float
        Period (cycles) or ``2 pi / omega`` (Hopf), NaN otherwise.
    reason : str
        Why it failed (empty when ``ok``).
    """

    ok: bool
    residual: float
    method: str
    parameters: dict
    state: np.ndarray
    eigenvalues: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, complex))
    period: float = float("nan")
    reason: str = ""


# ---------------------------------------------------------------------------
# extended systems of equilibria, generated once per (system, parameter)

@functools.lru_cache(maxsize=None)
def _extended(system: SymbolicSystem, free: str, kind: str):
    """``F(z, p)`` and ``DF(z, p)`` of the fold or Hopf extended system.

    ``z = (x, a, v)`` (fold, ``2n + 1``) or ``(x, a, w, v_r, v_i)`` (Hopf,
    ``3n + 2``); the normalisation vector ``c`` is passed in ``p`` after the
    system's parameters (with ``a`` left out of them).
    """
    n = system.dimension
    x = list(system.state)
    a = sympy.Symbol(free, real=True)
    a_sym = system.parameters[system.parameter_names.index(free)]
    others = [s for s in system.parameters if s is not a_sym]
    c = list(sympy.symbols(f"_c0:{n}", real=True))
    f = sympy.Matrix(system.rhs).xreplace({a_sym: a})
    J = system.jacobian.xreplace({a_sym: a})
    if kind == "fold":
        v = sympy.Matrix(sympy.symbols(f"_v0:{n}", real=True))
        F = sympy.Matrix.vstack(f, J * v, sympy.Matrix([sum(ci * vi for ci, vi in zip(c, v)) - 1]))
        z = x + [a] + list(v)
    else:
        w = sympy.Symbol("_omega", real=True)
        vr = sympy.Matrix(sympy.symbols(f"_vr0:{n}", real=True))
        vi = sympy.Matrix(sympy.symbols(f"_vi0:{n}", real=True))
        F = sympy.Matrix.vstack(
            f, J * vr + w * vi, J * vi - w * vr,
            sympy.Matrix([sum(ci * e for ci, e in zip(c, vr)) - 1, sum(ci * e for ci, e in zip(c, vi))]))
        z = x + [a, w] + list(vr) + list(vi)
    DF = F.jacobian(sympy.Matrix(z))
    args = [z, others + c]
    fF = sympy.lambdify(args, list(F), modules="numpy", cse=True)
    fD = sympy.lambdify(args, DF, modules="numpy", cse=True)
    names = [str(s) for s in others]
    return (lambda zz, pp: np.asarray(fF(zz, pp), dtype=float).ravel(),
            lambda zz, pp: np.asarray(fD(zz, pp), dtype=float), names)


@functools.lru_cache(maxsize=None)
def _extended_bogdanov_takens(system: SymbolicSystem, free: tuple[str, str]):
    """``F(z, p)`` and ``DF(z, p)`` of the Bogdanov-Takens system in ``z = (x, a_1, a_2, v_1, v_2)``
    (``3n + 2``): ``f = 0``, ``J v_1 = 0``, ``J v_2 = v_1`` (a Jordan chain of the double zero
    eigenvalue), ``c . v_1 = 1``, ``c . v_2 = 0``; ``c`` is passed in ``p`` after the other parameters."""
    n = system.dimension
    a = [sympy.Symbol(name, real=True) for name in free]
    a_sym = [system.parameters[system.parameter_names.index(name)] for name in free]
    others = [s for s in system.parameters if s not in a_sym]
    c = list(sympy.symbols(f"_c0:{n}", real=True))
    swap = dict(zip(a_sym, a))
    f = sympy.Matrix(system.rhs).xreplace(swap)
    J = system.jacobian.xreplace(swap)
    v1 = sympy.Matrix(sympy.symbols(f"_v0:{n}", real=True))
    v2 = sympy.Matrix(sympy.symbols(f"_u0:{n}", real=True))
    F = sympy.Matrix.vstack(f, J * v1, J * v2 - v1, sympy.Matrix([
        sum(ci * e for ci, e in zip(c, v1)) - 1, sum(ci * e for ci, e in zip(c, v2))]))
    z = list(system.state) + a + list(v1) + list(v2)
    DF = F.jacobian(sympy.Matrix(z))
    args = [z, others + c]
    fF = sympy.lambdify(args, list(F), modules="numpy", cse=True)
    fD = sympy.lambdify(args, DF, modules="numpy", cse=True)
    return (lambda zz, pp: np.asarray(fF(zz, pp), dtype=float).ravel(),
            lambda zz, pp: np.asarray(fD(zz, pp), dtype=float), [str(s) for s in others])


def solve_bogdanov_takens(system: SymbolicSystem, x, values: Mapping[str, float],
                          free: tuple[str, str]) -> Verification:
    """Solve the Bogdanov-Takens system (:func:`_extended_bogdanov_takens`) from a guess on a fold or
    Hopf locus in the two parameters ``free``.

    The guess of the Jordan chain: ``v_1`` the real eigenvector of the eigenvalue nearest zero, ``v_2``
    the least-squares solution of ``J v_2 = v_1`` in the span of the two eigenvectors nearest zero (where
    the restriction of ``J`` is nearly nilpotent, so ``v_2`` stays of order one)."""
    F, DF, names = _extended_bogdanov_takens(system, tuple(free))
    x = np.asarray(x, dtype=float)
    n = x.size
    J = _jacobian(system, x, values)
    w, V = np.linalg.eig(J)
    order = np.argsort(np.abs(w))
    v1 = np.real(V[:, order[0]])
    if not np.any(v1):
        v1 = np.imag(V[:, order[0]])
    Q = np.linalg.qr(np.column_stack([np.real(V[:, order[:2]]), np.imag(V[:, order[:2]])]))[0][:, :2] \
        if n >= 2 else np.eye(n)
    y = np.linalg.lstsq(J @ Q, v1, rcond=None)[0]
    c = v1 / float(v1 @ v1)
    v2 = Q @ y
    v2 = v2 - float(c @ v2) * v1
    p = np.array([values[nm] for nm in names] + list(c))
    z0 = np.concatenate([x, [values[free[0]], values[free[1]]], v1, v2])
    z, res, ok = damped_newton(lambda zz: F(zz, p), lambda zz: DF(zz, p), z0)
    solved = {free[0]: float(z[n]), free[1]: float(z[n + 1])}
    return Verification(
        ok=ok, residual=res, method="newton: f = 0, J v1 = 0, J v2 = v1, c.v1 = 1, c.v2 = 0 (exact derivatives)",
        parameters=solved, state=z[:n].copy(),
        eigenvalues=_eigen(system, z[:n], {**values, **solved}) if np.all(np.isfinite(z)) else np.empty(0, complex),
        reason="" if ok else f"Newton's method on the Bogdanov-Takens system did not converge (residual {res:.2g})")


@functools.lru_cache(maxsize=None)
def _extended_at(system: SymbolicSystem, free: tuple[str, str], kind: str, j: int):
    """The fold (``kind = "fold"``) or Hopf (``"hopf"``) system with both parameters free and one
    coordinate of ``(x, a_1, a_2)`` fixed (index ``j``, to the value ``s``): ``(f, J v, c . v - 1,
    z_j - s)`` in ``z = (x, a_1, a_2, v)`` (``2n + 2``), or ``(f, J v_r + w v_i, J v_i - w v_r,
    c . v_r - 1, c . v_i, z_j - s)`` in ``z = (x, a_1, a_2, w, v_r, v_i)`` (``3n + 3``); ``c`` and ``s``
    are passed in ``p`` after the other parameters. Also ``B(x, p, v) = D_x(J v) v``, the quadratic
    term of ``f`` along ``v`` (``p``: all of the system's parameters)."""
    n = system.dimension
    a = [sympy.Symbol(name, real=True) for name in free]
    a_sym = [system.parameters[system.parameter_names.index(name)] for name in free]
    others = [s for s in system.parameters if s not in a_sym]
    c = list(sympy.symbols(f"_c0:{n}", real=True))
    level = sympy.Symbol("_level", real=True)
    swap = dict(zip(a_sym, a))
    x = list(system.state)
    f = sympy.Matrix(system.rhs).xreplace(swap)
    J = system.jacobian.xreplace(swap)
    fixed = (x + a)[j] - level
    if kind == "fold":
        v = sympy.Matrix(sympy.symbols(f"_v0:{n}", real=True))
        F = sympy.Matrix.vstack(f, J * v, sympy.Matrix([sum(ci * e for ci, e in zip(c, v)) - 1, fixed]))
        z = x + a + list(v)
    else:
        w = sympy.Symbol("_omega", real=True)
        vr = sympy.Matrix(sympy.symbols(f"_vr0:{n}", real=True))
        vi = sympy.Matrix(sympy.symbols(f"_vi0:{n}", real=True))
        F = sympy.Matrix.vstack(f, J * vr + w * vi, J * vi - w * vr, sympy.Matrix([
            sum(ci * e for ci, e in zip(c, vr)) - 1, sum(ci * e for ci, e in zip(c, vi)), fixed]))
        z = x + a + [w] + list(vr) + list(vi)
    DF = F.jacobian(sympy.Matrix(z))
    args = [z, others + c + [level]]
    fF = sympy.lambdify(args, list(F), modules="numpy", cse=True)
    fD = sympy.lambdify(args, DF, modules="numpy", cse=True)
    vq = sympy.Matrix(sympy.symbols(f"_q0:{n}", real=True))
    B = (system.jacobian * vq).jacobian(sympy.Matrix(x)) * vq
    fB = sympy.lambdify([x, list(system.parameters), list(vq)], list(B), modules="numpy", cse=True)
    return (lambda zz, pp: np.asarray(fF(zz, pp), dtype=float).ravel(),
            lambda zz, pp: np.asarray(fD(zz, pp), dtype=float),
            lambda xx, pp, vv: np.asarray(fB(xx, pp, vv), dtype=float).ravel(), [str(s) for s in others])


def _root_along_locus(system: SymbolicSystem, branch: Branch, sp: SpecialPoint, kind: str, coordinate,
                      quantity, method: str) -> Verification:
    """Brent's method on ``quantity`` along a fold or Hopf locus near ``sp``.

    The locus is followed through the rows ``sp.index - 2 .. + 2`` by exact points of its defining
    system at fixed values ``s`` of one coordinate (``coordinate(X) -> j``, ``X`` the rows' ``(x, a_1,
    a_2)``), each solved by Newton's method with exact derivatives from the nearer row.
    ``quantity(x, values, z, B, reference)`` is evaluated there (``B`` from :func:`_extended_at`,
    ``reference`` a dict it may keep state in); its root between two of the rows is the
    point. The residual is the larger of the defining system's and of ``|quantity|`` relative to its size
    at the bracket's ends."""
    from scipy.optimize import brentq

    free = tuple(branch.free)
    n = system.dimension
    rows = [i for i in range(sp.index - 2, sp.index + 3) if 0 <= i < len(branch)]
    X = np.array([np.concatenate([_full_state_row(branch, i, system), [branch[f][i] for f in free]]) for i in rows])
    j = coordinate(X)
    F, DF, B, names = _extended_at(system, free, kind, j)
    base = dict(branch.parameters)
    reference: dict = {}
    state0 = _full_state_row(branch, sp.index, system)

    def solve_at(level, i):
        values = {**base, **{f: float(branch[f][i]) for f in free}}
        x = _full_state_row(branch, i, system)
        J = _jacobian(system, x, values)
        if kind == "fold":
            v, c = _fold_guess(J)
            z0 = np.concatenate([x, [values[free[0]], values[free[1]]], v])
        else:
            guess = _hopf_guess(J)
            if guess is None:
                return None
            omega, v, c = guess
            z0 = np.concatenate([x, [values[free[0]], values[free[1]], omega], v.real, v.imag])
        p = np.array([values[nm] for nm in names] + list(c) + [level])
        z, res, ok = damped_newton(lambda zz: F(zz, p), lambda zz: DF(zz, p), z0)
        if not ok:
            return None
        solved = {**values, free[0]: float(z[n]), free[1]: float(z[n + 1])}
        return quantity(z[:n], solved, z, B, reference), res, z[:n], solved

    levels = {i: float(X[k, j]) for k, i in enumerate(rows)}
    ends = [i for i in rows if i != sp.index] or rows
    for lo, hi in sorted(((a, b) for a in ends for b in ends if a < b), key=lambda ab: ab[1] - ab[0]):
        if levels[lo] == levels[hi]:
            continue
        ga, gb = solve_at(levels[lo], lo), solve_at(levels[hi], hi)
        if ga is None or gb is None or ga[0] * gb[0] > 0:
            continue
        last = {}

        def g(level):
            out = solve_at(level, lo if abs(level - levels[lo]) <= abs(level - levels[hi]) else hi)
            if out is None:
                raise ContinuationError("a point of the locus was not solved")
            last["out"] = out
            return out[0]

        try:
            level = brentq(g, min(levels[lo], levels[hi]), max(levels[lo], levels[hi]), xtol=1e-14, rtol=1e-14)
            value, res, x, solved = g(level), *last["out"][1:]
        except (ContinuationError, ValueError):
            continue
        residual = float(max(res, abs(value) / max(abs(ga[0]), abs(gb[0]), 1e-300)))
        ok = residual < RESIDUAL_TOLERANCE
        return Verification(ok=ok, residual=residual, method=method, parameters={f: solved[f] for f in free},
                            state=x, eigenvalues=_eigen(system, x, solved),
                            reason="" if ok else f"the condition is {value:.2g} at the root found")
    return Verification(ok=False, residual=float("inf"), method=method, parameters=dict(sp.parameters),
                        state=state0, reason="the condition does not change sign on the rows around the point")


def solve_cusp(system: SymbolicSystem, branch: Branch, sp: SpecialPoint) -> Verification:
    """Locate a cusp on a fold locus: where the quadratic coefficient ``w . B(v, v)`` of the fold's normal
    form (``J v = 0``, ``w^T J = 0``, ``|w| = 1`` with its sign kept continuous: ``w . v`` vanishes at a
    Bogdanov-Takens point) changes sign, along exact fold points at fixed values of the state component
    that changes most there (both parameters turn at a cusp); see :func:`_root_along_locus`."""
    n = system.dimension

    def coefficient(x, values, z, B, reference):
        v = z[n + 2:]
        wl = np.linalg.svd(_jacobian(system, x, values))[0][:, -1]
        reference.setdefault("w", wl)
        wl = wl if float(wl @ reference["w"]) >= 0 else -wl
        p = np.array([values[nm] for nm in system.parameter_names])
        return float(wl @ B(x, p, v))

    return _root_along_locus(system, branch, sp, "fold", lambda X: int(np.argmax(np.ptp(X[:, :n], axis=0))),
                             coefficient, "newton: fold points at fixed x_j, Brent on w.B(v,v)")


def solve_generalised_hopf(system: SymbolicSystem, branch: Branch, sp: SpecialPoint) -> Verification:
    """Locate a generalised Hopf (Bautin) point on a Hopf locus: the root of the first Lyapunov
    coefficient ``l1`` along exact Hopf points at fixed values of the coordinate (state or parameter)
    that changes most there, monotonically; see :func:`_root_along_locus`."""

    def coordinate(X):
        monotone = [k for k in range(X.shape[1]) if np.all(np.diff(X[:, k]) > 0) or np.all(np.diff(X[:, k]) < 0)]
        candidates = monotone or list(range(X.shape[1]))
        return int(max(candidates, key=lambda k: np.ptp(X[:, k])))

    return _root_along_locus(system, branch, sp, "hopf", coordinate,
                             lambda x, values, z, B, reference: first_lyapunov_coefficient(system, x, values),
                             "newton: Hopf points at fixed z_j, Brent on the first Lyapunov coefficient l1")


def damped_newton(F, DF, z, *, max_iterations=40, tolerance=RESIDUAL_TOLERANCE, lstsq_fallback=True):
    """Damped Newton's method on a square system; returns ``(z, residual, converged)``.

    A singular Newton matrix is solved by least squares (``lstsq_fallback``) or ends the
    iteration; the step is halved until the max-norm residual decreases."""
    z = np.asarray(z, dtype=float).copy()
    with np.errstate(all="ignore"):
        r = F(z)
        res = float(np.max(np.abs(r))) if np.all(np.isfinite(r)) else np.inf
        for _ in range(max_iterations):
            if res < 1e-13:
                break
            try:
                step = np.linalg.solve(DF(z), -r)
            except np.linalg.LinAlgError:
                if not lstsq_fallback:
                    return z, res, False
                step = np.linalg.lstsq(DF(z), -r, rcond=None)[0]
            if not np.all(np.isfinite(step)):
                break
            lam = 1.0
            while lam > 1e-4:
                trial = z + lam * step
                rt = F(trial)
                rest = float(np.max(np.abs(rt))) if np.all(np.isfinite(rt)) else np.inf
                if rest < res or rest < tolerance:
                    break
                lam *= 0.5
            else:
                break
            small = np.max(np.abs(lam * step)) <= 1e-15 * (1.0 + np.max(np.abs(z)))
            z, r, res = trial, rt, rest
            if small and res < tolerance:
                break
    return z, res, res < tolerance


def _eigen(system: SymbolicSystem, x, values: Mapping[str, float]) -> np.ndarray:
    from bifnet.continuation._auto import _exact_eigenvalues

    return _exact_eigenvalues(system, np.asarray(x, dtype=float), values)


def _jacobian(system, x, values):
    from bifnet.codegen import jacobian_function

    p = np.array([values[n] for n in system.parameter_names], dtype=float)
    return jacobian_function(system)(np.asarray(x, dtype=float), p)


def _fold_guess(J: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(v, c)``: the real part of the eigenvector of the eigenvalue nearest zero (real at a fold; near
    one, its real part guides Newton) and the normalisation ``c = v / |v|^2``."""
    w, V = np.linalg.eig(J)
    v = np.real(V[:, int(np.argmin(np.abs(w)))])
    if not np.any(v):
        v = np.ones(J.shape[0])
    return v, v / float(v @ v)


def _hopf_guess(J: np.ndarray):
    """``(omega, v, c)`` of the complex pair nearest the imaginary axis (``v`` scaled so that
    ``c . v = 1``), or None without a complex pair."""
    w, V = np.linalg.eig(J)
    pairs = np.flatnonzero(w.imag > 1e-12 * max(1.0, float(np.max(np.abs(w)))))
    if pairs.size == 0:
        return None
    k = pairs[np.argmin(np.abs(w[pairs].real))]
    v = V[:, k]
    c = np.real(v) / float(np.real(v) @ np.real(v)) if np.any(np.real(v)) else np.imag(v)
    return float(w[k].imag), v / complex(c @ v), c


def solve_fold(system: SymbolicSystem, x, values: Mapping[str, float], free: str) -> Verification:
    """Solve the fold (zero eigenvalue) extended system from a guess.

    Parameters
    ----------
    system : SymbolicSystem
    x : array_like
        Guess of the equilibrium.
    values : mapping
        Every parameter of the system (``free`` at its guessed value).
    free : str
        The parameter solved for.

    Returns
    -------
    Verification
        ``ok`` when Newton's method converged (the caller checks closeness).
    """
    F, DF, names = _extended(system, free, "fold")
    x = np.asarray(x, dtype=float)
    v, c = _fold_guess(_jacobian(system, x, values))
    p = np.array([values[n] for n in names] + list(c))
    z0 = np.concatenate([x, [values[free]], v])
    z, res, ok = damped_newton(lambda zz: F(zz, p), lambda zz: DF(zz, p), z0)
    n = x.size
    out = dict(values)
    out[free] = float(z[n])
    return Verification(ok=ok, residual=res, method="newton: f = 0, J v = 0, c.v = 1 (exact derivatives)",
                        parameters={free: float(z[n])}, state=z[:n].copy(),
                        eigenvalues=_eigen(system, z[:n], out) if np.all(np.isfinite(z)) else np.empty(0, complex),
                        reason="" if ok else f"Newton's method on the fold system did not converge "
                                             f"(residual {res:.2g})")


def solve_hopf(system: SymbolicSystem, x, values: Mapping[str, float], free: str) -> Verification:
    """Solve the Hopf (imaginary pair) extended system from a guess; see :func:`solve_fold`."""
    F, DF, names = _extended(system, free, "hopf")
    x = np.asarray(x, dtype=float)
    J = _jacobian(system, x, values)
    guess = _hopf_guess(J)
    n = x.size
    if guess is None:
        return Verification(ok=False, residual=np.inf, method="newton: Hopf system",
                            parameters={free: float(values[free])}, state=x, eigenvalues=np.linalg.eigvals(J),
                            reason="no complex eigenvalue pair at the engine's point")
    omega0, v, cvec = guess
    p = np.array([values[nm] for nm in names] + list(cvec))
    z0 = np.concatenate([x, [values[free], omega0], v.real, v.imag])
    z, res, ok = damped_newton(lambda zz: F(zz, p), lambda zz: DF(zz, p), z0)
    omega = float(z[n + 1])
    reason = ""
    if ok and abs(abs(omega) - abs(omega0)) > 1e-2 * abs(omega0):
        ok, reason = False, (f"Newton's method converged to another imaginary pair (omega {abs(omega):.6g} "
                             f"instead of {abs(omega0):.6g})")
    elif ok and not abs(omega) > 1e-8:
        ok, reason = False, "Newton's method converged to a zero eigenvalue, not an imaginary pair"
    elif not ok:
        reason = f"Newton's method on the Hopf system did not converge (residual {res:.2g})"
    out = dict(values)
    out[free] = float(z[n])
    return Verification(ok=ok, residual=res, method="newton: f = 0, J v = i w v, c.v = 1 (exact derivatives)",
                        parameters={free: float(z[n])}, state=z[:n].copy(),
                        eigenvalues=_eigen(system, z[:n], out) if np.all(np.isfinite(z)) else np.empty(0, complex),
                        period=2 * math.pi / abs(omega) if omega else float("nan"), reason=reason)


# ---------------------------------------------------------------------------
# branches

def _row(branch: Branch, i: int, names) -> np.ndarray:
    return np.array([branch[nm][i] for nm in names], dtype=float)


def _close_to_branch(branch: Branch, index: int, values: np.ndarray, names) -> bool:
    """Is ``values`` (in the columns ``names``) within the stretch of rows
    ``index - 1 .. index + 1``? Distances are scaled per column by the branch's range, and at least by
    1e-6 of the column's size: a column that does not change along the branch (the period of the Bautin
    normal form, 2 pi / omega on every orbit) tells points apart by the engine's rounding only."""
    n = len(branch)
    data = np.column_stack([branch[nm] for nm in names]).astype(float)
    size = np.maximum(1.0, np.nanmax(np.abs(data), axis=0))
    scale = np.maximum(np.nanmax(data, axis=0) - np.nanmin(data, axis=0), 1e-6 * size)
    lo, hi = max(index - 1, 0), min(index + 1, n - 1)
    rows = data[lo:hi + 1] / scale
    target = values / scale
    reach = max(float(np.max(np.abs(np.diff(rows, axis=0)))) if len(rows) > 1 else 0.0, 1e-6)
    return float(np.min(np.max(np.abs(rows - target), axis=1))) <= 1.5 * reach


def verify_equilibrium_point(branch: Branch, sp: SpecialPoint, system: SymbolicSystem) -> Verification:
    """Solve the defining system of an LP, BP or HB point of an equilibrium branch."""
    free = branch.free[0]
    values = {**branch.parameters, **sp.parameters}
    x = _full_state_row(branch, sp.index, system)
    solver = solve_hopf if sp.kind is SpecialKind.HB else solve_fold
    result = solver(system, x, values, free)
    if result.ok:
        names = [free] + list(branch.variables)
        cand = np.concatenate([[result.parameters[free]], result.state[:len(branch.variables)]])
        if not _close_to_branch(branch, sp.index, cand, names):
            return dataclasses.replace(
                result, ok=False, parameters={free: float(sp.parameters[free])}, state=x,
                reason=f"Newton's method converged to {free} = {result.parameters[free]:.8g}, "
                       f"away from the engine's estimate {sp.parameters[free]:.8g}")
    return result


def _full_state_row(branch: Branch, index: int, system: SymbolicSystem) -> np.ndarray:
    """The full state of ``system`` at a row (an augmented system's ``y = x`` half filled in)."""
    x = np.array([branch[v][index] for v in branch.variables], dtype=float)
    if x.size == system.dimension:
        return x
    raw = (branch.engine or {}).get("points", {}).get(index)
    if raw is not None:
        from bifnet.continuation._auto import _full_state

        full = _full_state(raw, system.dimension)
        if np.all(np.isfinite(full)):
            return full
    reps = system.dimension // max(x.size, 1)
    return np.tile(x, reps)[: system.dimension]


@functools.lru_cache(maxsize=None)
def derivative_tensors(rhs: tuple, variables: tuple, parameters: tuple):
    """Exact second and third derivatives of ``rhs`` (``m`` expressions) in ``variables`` (``k`` symbols).

    Returns two functions of ``(values of variables, values of parameters)``:
    ``H[i, j, l] = d^2 rhs_i / dv_j dv_l`` of shape ``(m, k, k)`` and
    ``T[i, j, l, r]`` of shape ``(m, k, k, k)`` (sympy derivatives, lambdified once).
    """
    m, k = len(rhs), len(variables)
    f, x = list(rhs), list(variables)
    H = [[[sympy.diff(f[i], x[j], x[l]) for l in range(k)] for j in range(k)] for i in range(m)]
    T = [[[[sympy.diff(H[i][j][l], x[r]) for r in range(k)] for l in range(k)] for j in range(k)]
         for i in range(m)]
    args = [x, list(parameters)]
    fH = sympy.lambdify(args, H, modules="numpy", cse=True)
    fT = sympy.lambdify(args, T, modules="numpy", cse=True)
    shape = lambda value, dims: np.asarray(np.broadcast_to(np.asarray(value, dtype=float), dims))  # noqa: E731
    return (lambda xx, pp: shape(fH(xx, pp), (m, k, k)), lambda xx, pp: shape(fT(xx, pp), (m, k, k, k)))


def _derivative_tensors(system: SymbolicSystem):
    """Second and third derivatives of the right-hand side, ``H[i, j, k]`` and ``T[i, j, k, l]``."""
    return derivative_tensors(tuple(system.rhs), tuple(system.state), tuple(system.parameters))


def first_lyapunov_coefficient(system: SymbolicSystem, x, values: Mapping[str, float]) -> float:
    """First Lyapunov coefficient ``l1`` at a Hopf point (negative: supercritical).

    Notes
    -----
    Kuznetsov, *Elements of Applied Bifurcation Theory*, eq. (3.20):
    ``l1 = Re(<p, C(q,q,qb)> - 2 <p, B(q, A^-1 B(q,qb))> + <p, B(qb, (2iw - A)^-1 B(q,q))>) / (2 w)``
    with ``A q = i w q``, ``A^T p = -i w p``, ``<q, q> = <p, q> = 1`` and ``B``, ``C`` the second
    and third derivatives of the vector field (exact, from sympy). For
    ``z' = (mu + i w) z + c |z|^2 z`` it gives ``Re(c) / w``.
    """
    x = np.asarray(x, dtype=float)
    pv = np.array([values[n] for n in system.parameter_names], dtype=float)
    A = _jacobian(system, x, values)
    w, V = np.linalg.eig(A)
    pairs = np.flatnonzero(w.imag > 1e-12 * max(1.0, float(np.max(np.abs(w)))))
    if pairs.size == 0:
        return float("nan")
    k = pairs[np.argmin(np.abs(w[pairs].real))]
    omega = float(w[k].imag)
    q = V[:, k] / np.linalg.norm(V[:, k])
    wl, U = np.linalg.eig(A.T)
    p = U[:, int(np.argmin(np.abs(wl + 1j * omega)))]
    p = p / np.conj(np.vdot(p, q))
    H, T = _derivative_tensors(system)
    Hx, Tx = H(x, pv), T(x, pv)
    B = lambda u, v: np.einsum("ijk,j,k->i", Hx, u, v)  # noqa: E731
    qb = np.conj(q)
    n = x.size
    c = np.einsum("ijkl,j,k,l->i", Tx, q, q, qb)
    term = (np.vdot(p, c) - 2 * np.vdot(p, B(q, np.linalg.solve(A, B(q, qb))))
            + np.vdot(p, B(qb, np.linalg.solve(2j * omega * np.eye(n) - A, B(q, q)))))
    return float(term.real / (2 * omega))


def check_generalised_hopf(system: SymbolicSystem, sp: SpecialPoint, branch: Branch) -> Verification:
    """A GH point on a Hopf locus: ``l1`` changes sign between the neighbouring rows."""
    values = dict(branch.parameters)
    l1 = []
    rows = [max(sp.index - 1, 0), min(sp.index + 1, len(branch) - 1)]
    for i in rows:
        values.update({f: float(branch[f][i]) for f in branch.free})
        l1.append(first_lyapunov_coefficient(system, _full_state_row(branch, i, system), values))
    values.update(sp.parameters)
    at = first_lyapunov_coefficient(system, _full_state_row(branch, sp.index, system), values)
    scale = max(abs(l1[0]), abs(l1[1]), 1e-300)
    ok = bool(np.all(np.isfinite(l1)) and l1[0] * l1[1] < 0)
    return Verification(
        ok=ok, residual=float(abs(at) / scale) if np.isfinite(at) else float("nan"),
        method="check: the first Lyapunov coefficient l1 changes sign between the neighbouring rows "
               "(residual |l1| here relative to them)",
        parameters=dict(sp.parameters), state=_full_state_row(branch, sp.index, system),
        eigenvalues=_eigen(system, _full_state_row(branch, sp.index, system), values),
        reason="" if ok else f"l1 does not change sign around the point ({l1[0]:.3g}, {l1[1]:.3g})")


def check_codim2(system: SymbolicSystem, sp: SpecialPoint, branch: Branch) -> Verification:
    """Check the eigenvalue conditions of a codimension-two point on an equilibrium locus; a
    Bogdanov-Takens point is solved from its defining system instead (:func:`solve_bogdanov_takens`)."""
    values = {**branch.parameters, **sp.parameters}
    x = _full_state_row(branch, sp.index, system)
    if sp.kind is SpecialKind.BT and len(branch.free) == 2:
        result = solve_bogdanov_takens(system, x, values, tuple(branch.free))
        if result.ok:
            names = list(branch.free) + list(branch.variables)
            cand = np.concatenate([[result.parameters[f] for f in branch.free], result.state[:len(branch.variables)]])
            if not _close_to_branch(branch, sp.index, cand, names):
                return dataclasses.replace(
                    result, ok=False, parameters=dict(sp.parameters), state=x,
                    reason="Newton's method converged to " + ", ".join(
                        f"{k} = {v:.8g}" for k, v in result.parameters.items()) + ", away from the engine's estimate")
        return result
    if sp.kind is SpecialKind.CP and len(branch.free) == 2 and branch.locus_of is SpecialKind.LP:
        return solve_cusp(system, branch, sp)
    ev = _eigen(system, x, values)
    scale = max(1.0, float(np.max(np.abs(ev)))) if ev.size else 1.0
    zero = np.abs(ev) / scale
    axis = np.abs(ev.real) / scale
    imag = ev.imag > 1e-8 * scale
    checks = {
        SpecialKind.BT: ("two zero eigenvalues", np.sort(zero)[:2].max() if ev.size >= 2 else np.inf),
        SpecialKind.CP: ("a zero eigenvalue", zero.min() if ev.size else np.inf),
        SpecialKind.ZH: ("a zero eigenvalue and an imaginary pair",
                         max(zero.min(), axis[imag].min()) if imag.any() else np.inf),
        SpecialKind.HH: ("two imaginary pairs", np.sort(axis[imag])[2:4].max() if imag.sum() >= 4 else np.inf),
    }
    what, residual = checks[sp.kind]
    f = _rhs_norm(system, x, values)
    residual = float(max(residual, f))
    ok = residual < _ZERO_EIGEN
    return Verification(ok=ok, residual=residual, method=f"check: f = 0 and {what} at the engine's point",
                        parameters=dict(sp.parameters), state=x, eigenvalues=ev,
                        reason="" if ok else f"the eigenvalues do not show {what} (residual {residual:.2g})")


def _rhs_norm(system, x, values) -> float:
    from bifnet.codegen import rhs_function

    p = np.array([values[n] for n in system.parameter_names], dtype=float)
    return float(np.max(np.abs(rhs_function(system)(np.asarray(x, dtype=float), p))))


def apply(sp: SpecialPoint, result: Verification, *, branch: Branch, polish: bool = True) -> SpecialPoint:
    """The special point with the verification recorded (and polished values when ``ok``)."""
    details = dict(sp.details)
    if not result.ok:
        details["reason"] = result.reason
        return dataclasses.replace(sp, located=False, residual=float(result.residual),
                                   verification=result.method, details=details)
    if not polish:
        return dataclasses.replace(sp, residual=float(result.residual), verification=result.method,
                                   details=details)
    free = branch.free[0]
    shift = float(result.parameters[free] - sp.parameters[free])
    details["engine_value"] = float(sp.parameters[free])
    params = dict(sp.parameters)
    params.update(result.parameters)
    n = len(branch.variables)
    state = tuple(float(v) for v in result.state[:n]) if result.state.size else sp.state
    log.debug("%s %s polished: %s moved by %.3g", branch.name, sp.name, free, shift)
    return dataclasses.replace(
        sp, parameters=params, state=state, eigenvalues=tuple(complex(e) for e in result.eigenvalues),
        period=result.period if np.isfinite(result.period) else sp.period, located=True,
        residual=float(result.residual), verification=result.method, details=details)


_EQ_KINDS = (SpecialKind.LP, SpecialKind.BP, SpecialKind.HB)
_CODIM2 = (SpecialKind.BT, SpecialKind.CP, SpecialKind.ZH, SpecialKind.HH)  # GH: check_generalised_hopf


def verify_branch(branch: Branch, system: SymbolicSystem | None = None, *, memo: dict | None = None,
                  budget: list | None = None, warn: bool = True) -> Branch:
    """Verify (and polish) every special point of a branch; see the module docstring.

    Points of kinds that bifnet cannot re-solve are marked with the method
    ``"not verified"`` and keep their engine values. ``memo`` (a dict) keeps
    results per engine point across calls; ``budget`` (a one-element list of
    shooting solves left) is shared by the calls for one cycle branch. ``warn``: log a warning for each
    point that failed (the accounting warns once, for what is left after its refinements).
    """
    if system is None:
        problem = (branch.engine or {}).get("problem")
        system = getattr(problem, "system", None)
    if system is None or not branch.special_points:
        return branch
    out = []
    budget = budget if budget is not None else [CYCLE_BUDGET]
    memo = memo if memo is not None else {}
    engine_points = (branch.engine or {}).get("points", {})
    for sp in branch.special_points:
        raw = engine_points.get(sp.index)
        key = (id(raw), sp.kind) if raw is not None else None
        if key in memo and memo[key][0] is raw:
            out.append(dataclasses.replace(memo[key][1], index=sp.index, name=sp.name))
            continue
        try:
            if sp.verification:           # already verified (e.g. found by the accounting)
                out.append(sp)
                continue
            if branch.kind is BranchKind.CYCLES and budget[0] <= 0:
                details = {**sp.details, "reason": f"not verified: the branch's verification budget "
                                                   f"({CYCLE_BUDGET} shooting solves) was spent"}
                out.append(dataclasses.replace(sp, verification="not verified", details=details))
                continue
            if branch.kind is BranchKind.EQUILIBRIA and sp.kind in _EQ_KINDS:
                marked = apply(sp, verify_equilibrium_point(branch, sp, system), branch=branch)
                if marked.kind is SpecialKind.HB and marked.located and system.kind == "homogeneous":
                    l1 = first_lyapunov_coefficient(system, _full_state_row(branch, sp.index, system) if not
                                                    marked.state else np.asarray(marked.state),
                                                    {**branch.parameters, **marked.parameters})
                    marked = dataclasses.replace(marked, details={
                        **marked.details, "l1": l1,
                        "criticality": "super" if l1 < 0 else ("sub" if l1 > 0 else "degenerate")})
                out.append(marked)
            elif branch.kind is BranchKind.LOCUS and branch.locus_of is SpecialKind.HB and sp.kind is SpecialKind.GH \
                    and system.kind == "homogeneous":
                result = solve_generalised_hopf(system, branch, sp)
                out.append(apply(sp, result, branch=branch) if result.ok else
                           apply(sp, check_generalised_hopf(system, sp, branch), branch=branch, polish=False))
            elif branch.kind is BranchKind.LOCUS and sp.kind is SpecialKind.GH and system.kind == "augmented":
                # a transverse Hopf curve: the augmented system follows one mode, and the first Lyapunov
                # coefficient of its Hopf points is not the network's (the modes interact through the
                # nonlinear terms): the engine's GH label is no point of the network (wilson_cowan on tvb96
                # gave five along one complex mode's curve, where the pattern's l1 keeps its sign)
                out.append(dataclasses.replace(sp, located=False, verification="not verified", details={
                    **sp.details, "reason": "the engine's generalised-Hopf test on the one-mode augmented system, "
                    "whose Lyapunov coefficient is not the network's (the network's: transverse_points.csv, l1)"}))
            elif branch.kind is BranchKind.LOCUS and branch.locus_of in (SpecialKind.LP, SpecialKind.HB) \
                    and sp.kind in _CODIM2:
                out.append(apply(sp, check_codim2(system, sp, branch), branch=branch,
                                 polish=sp.kind in (SpecialKind.BT, SpecialKind.CP)))
            elif branch.kind is BranchKind.CYCLES and sp.kind in (SpecialKind.LPC, SpecialKind.PD, SpecialKind.NS) \
                    and system.kind == "homogeneous":
                from bifnet.continuation.verify_cycles import verify_cycle_point

                budget[0] -= 1
                out.append(apply(sp, verify_cycle_point(branch, sp, system), branch=branch))
            elif branch.kind is BranchKind.CYCLES and sp.kind is SpecialKind.BP and system.kind == "homogeneous":
                # a branch point of cycles has a double multiplier 1, like a fold: the same defining system
                from bifnet.continuation.verify_cycles import verify_cycle_point

                budget[0] -= 1
                result = verify_cycle_point(branch, dataclasses.replace(sp, kind=SpecialKind.LPC), system)
                result = dataclasses.replace(result, method=result.method.replace(
                    "singular", "singular (a double multiplier 1: a branch point or a fold of cycles)"))
                out.append(apply(sp, result, branch=branch))
            else:
                out.append(dataclasses.replace(sp, verification="not verified"))
        except (BifnetError, np.linalg.LinAlgError, ValueError, FloatingPointError) as error:
            details = {**sp.details, "reason": str(error)}
            out.append(dataclasses.replace(sp, located=False, verification="failed", details=details))
        if key is not None:
            memo[key] = (raw, out[-1])
    verified = dataclasses.replace(branch, special_points=tuple(out))
    if warn:
        warn_failed(verified)
    return verified


def warn_failed(branch: Branch) -> None:
    """One warning line for each point of the branch that failed verification."""
    for sp in branch.special_points:
        if sp.verification not in ("", "not verified") and not sp.located and sp.details.get(
                "found_by", "engine") == "engine" and sp.kind not in (
                SpecialKind.SNIC, SpecialKind.HOM, SpecialKind.EP, SpecialKind.MX):
            log.warning("%s: %s at %s failed verification: %s", branch.name, sp.name,
                        ", ".join(f"{k} = {v:.8g}" for k, v in sp.parameters.items()),
                        sp.details.get("reason", ""))
