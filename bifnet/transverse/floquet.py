"""Transverse stability of a homogeneous limit cycle: Floquet dispersion.

For a connectome eigenvalue ``Lambda`` the perturbations along its eigenmode
obey the variational equation ``Phi' = J(Lambda, x(t)) Phi`` with
``J(Lambda) = A(x) + Lambda B(x)`` (:func:`bifnet.systems.mode_jacobian`) along
the homogeneous periodic orbit ``x(t)``. The monodromy ``M = Phi(T)`` gives the
Floquet multipliers ``mu`` and exponents ``log(mu) / T``.

Algorithm (see :func:`floquet_dispersion`): the cycle is integrated once with
an explicit Runge–Kutta tableau (8th-order Dormand–Prince or classical RK4) on
a mesh adapted to the orbit (the steps of an adaptive DOP853 run). Because the
variational equation is linear and ``J`` is affine in ``Lambda``, each step
maps ``Phi`` to ``P_m(Lambda) Phi`` with ``P_m`` a matrix polynomial in
``Lambda``, built once per step for all modes; each mode then costs one Horner
evaluation and one ``n x n`` product per step (compiled with numba). The result
is exactly the Runge–Kutta discretisation of the joint system
``[x; Phi_1; ...; Phi_K]``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Mapping

import numpy as np
import sympy

from bifnet.errors import ContinuationError, ModelError
from bifnet.model import NodeModel

log = logging.getLogger(__name__)

#: ``|Lambda - Lambda_u|`` below which a mode is the homogeneous one (trivial multiplier removed);
#: ``Lambda_u`` is 1 for additive coupling (``P``), 0 for diffusive coupling (``L``).
HOMOGENEOUS_TOLERANCE = 1e-12

_METHODS = ("dop853", "rk4")


# ---------------------------------------------------------------------------
# results

@dataclasses.dataclass(frozen=True)
class HomogeneousCycle:
    """A periodic orbit of the homogeneous system.

    Attributes
    ----------
    parameters : dict of str to float
        All model parameters.
    period : float
        Period ``T`` (ms).
    x0 : ndarray, shape (n,)
        A point on the orbit (the state at time 0).
    """

    parameters: dict[str, float]
    period: float
    x0: np.ndarray

    @property
    def frequency_hz(self) -> float:
        """``1000 / period`` (time in ms)."""
        return 1000.0 / self.period


@dataclasses.dataclass(frozen=True)
class FloquetDispersion:
    """Floquet multipliers of every connectome mode along a homogeneous cycle.

    Attributes
    ----------
    Lambda : ndarray, shape (K,)
        Connectome eigenvalues (real or complex), as given.
    multipliers : ndarray, shape (K, n), complex
        Floquet multipliers of each mode, sorted by decreasing modulus.
    exponents : ndarray, shape (K, n), complex
        ``log(mu) / T`` (1/ms), principal branch, same order.
    growth_rate : ndarray, shape (K,)
        Largest real part of the exponents, excluding the trivial multiplier
        (the one closest to 1) for the homogeneous mode ``Lambda == 1``.
    frequency_hz : ndarray, shape (K,)
        ``|Im|`` of that exponent over ``2 pi``, in Hz (time in ms).
    period : float
        Period of the cycle (ms).
    steps : int
        Runge–Kutta steps used over one period.
    method : str
        Runge–Kutta tableau (``"dop853"`` or ``"rk4"``).
    """

    Lambda: np.ndarray
    multipliers: np.ndarray
    exponents: np.ndarray
    growth_rate: np.ndarray
    frequency_hz: np.ndarray
    period: float
    steps: int = 0
    method: str = ""

    def to_frame(self, modes=None):
        """The dispersion as a DataFrame, one row per mode.

        Parameters
        ----------
        modes : sequence of int, optional
            Mode numbers of the rows (default ``1..K``).

        Returns
        -------
        pandas.DataFrame
            Columns ``mode``, ``Lambda`` (real part), ``Lambda_imag``,
            ``growth_rate`` (1/ms), ``frequency_hz``, ``solution`` (``"LC"``).
        """
        import pandas as pd

        K = len(self.Lambda)
        if modes is None:
            modes = np.arange(1, K + 1)
        modes = np.asarray(modes)
        if modes.shape != (K,):
            raise ValueError(f"modes must have one entry per Lambda ({K}), got shape {modes.shape}")
        lam = np.asarray(self.Lambda)
        return pd.DataFrame({
            "mode": modes.astype(int),
            "Lambda": np.real(lam).astype(float),
            "Lambda_imag": np.imag(lam).astype(float),
            "growth_rate": np.asarray(self.growth_rate, dtype=float),
            "frequency_hz": np.asarray(self.frequency_hz, dtype=float),
            "solution": "LC",
        })


# ---------------------------------------------------------------------------
# compiled kernels

def _parameter_vector(model: NodeModel, parameters: Mapping[str, float]) -> np.ndarray:
    values = model.resolve_parameters(parameters)
    return np.array([values[name] for name in model.parameter_names], dtype=float)


@functools.lru_cache(maxsize=None)
def _tableau(method: str):
    """``(c, a, b)`` of the explicit Runge–Kutta scheme ``method`` (cached: built once per process, 30 µs
    a call otherwise, several calls per shooting iteration; the kernels only read them)."""
    if method == "rk4":
        c = np.array([0.0, 0.5, 0.5, 1.0])
        a = np.zeros((4, 4))
        a[1, 0] = a[2, 1] = 0.5
        a[3, 2] = 1.0
        b = np.array([1.0, 2.0, 2.0, 1.0]) / 6.0
        return c, a, b
    if method == "dop853":
        from scipy.integrate._ivp import dop853_coefficients as dc

        s = dc.N_STAGES
        return (np.ascontiguousarray(dc.C[:s], dtype=float),
                np.ascontiguousarray(dc.A[:s, :s], dtype=float),
                np.ascontiguousarray(dc.B, dtype=float))
    raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")


def _compile_source(name: str, args: list[str], targets: list[tuple[str, sympy.Expr]], subs: dict):
    """Source of a scalar kernel writing ``targets`` (after CSE) into arrays."""
    from sympy.printing.numpy import NumPyPrinter

    printer = NumPyPrinter({"fully_qualified_modules": True})
    reps, reduced = sympy.cse([e.xreplace(subs) for _, e in targets],
                              symbols=sympy.numbered_symbols("_t"))
    lines = [f"def {name}({', '.join(args)}):"]
    lines += [f"    {sym} = {printer.doprint(e)}" for sym, e in reps]
    lines += [f"    {target} = {printer.doprint(e)}" for (target, _), e in zip(targets, reduced)]
    lines.append("    return None")
    return "\n".join(lines)


_KERNEL_HEADER = """\
# Floquet kernels of one model, generated by bifnet.transverse.floquet (cached on disk by numba).
# ruff: noqa
import math

import numba
import numpy
import numpy as np

jit = numba.njit(cache=True, nogil=True)
"""

_KERNEL_BODY = r'''
@jit
def step_polynomials(x0, p, hs, c, a, b, P):
    """Integrate ``x`` over the steps ``hs`` and write each step's propagator
    of ``Phi' = (A + Lambda B) Phi`` as a polynomial in ``Lambda``:
    ``P[m, d]`` is the coefficient of ``Lambda**d`` (``d = 0..s``).
    Returns the final state.

    Layout: the stage values ``Y[r, d, q]`` and slopes ``K[i, r, d, q]`` keep the
    degree and column innermost, so that every update is a contiguous loop over
    ``(d, q)`` (vectorised); zero tableau entries and zero entries of ``B`` are skipped."""
    s = c.shape[0]
    D = s + 1
    W = D * n
    x = x0.copy()
    k = np.empty((s, n))
    xt = np.empty(n)
    A = np.empty((n, n))
    Bm = np.empty((n, n))
    Y = np.zeros((n, W))           # Y[r, d * n + q]: stage value, degree <= i
    K = np.zeros((s, n, W + n))    # K[i, r, d * n + q]: stage slope, degree <= i + 1
    Q = np.empty((n, W))           # the step's propagator, same layout
    for m in range(hs.shape[0]):
        h = hs[m]
        for i in range(s):
            rk_stage(x, p, h, a, k, xt, i)
            mode_ab(xt, p, A, Bm)
            # Y_i = I + h sum_j a_ij K_j (degrees 0..i)
            w = (i + 1) * n
            for r in range(n):
                for e in range(w):
                    Y[r, e] = 0.0
                Y[r, r] = 1.0
            for j in range(i):
                cij = h * a[i, j]
                if cij != 0.0:
                    for r in range(n):
                        for e in range(w):
                            Y[r, e] += cij * K[j, r, e]
            # K_i = A Y_i + Lambda B Y_i (degrees 0..i+1)
            for r in range(n):
                for e in range(w + n):
                    K[i, r, e] = 0.0
                for t in range(n):
                    art = A[r, t]
                    if art != 0.0:
                        for e in range(w):
                            K[i, r, e] += art * Y[t, e]
                    brt = Bm[r, t]
                    if brt != 0.0:
                        for e in range(w):
                            K[i, r, n + e] += brt * Y[t, e]
        rk_combine(x, h, b, k, s, x)
        # P = I + h sum_i b_i K_i
        for r in range(n):
            for e in range(W):
                Q[r, e] = 0.0
            Q[r, r] = 1.0
        for i in range(s):
            hb = h * b[i]
            if hb != 0.0:
                w = (i + 2) * n
                for r in range(n):
                    for e in range(w):
                        Q[r, e] += hb * K[i, r, e]
        for d in range(D):
            for r in range(n):
                for q in range(n):
                    P[m, d, r, q] = Q[r, d * n + q]
    return x

@jit
def flow_fixed(x0, p, hs, c, a, b):
    """The state after the Runge-Kutta steps ``hs`` from ``x0`` (no tangent: the flow map on a fixed
    mesh, smooth in ``x0`` and ``p``, for difference quotients)."""
    s = c.shape[0]
    x = x0.copy()
    k = np.empty((s, n))
    xt = np.empty(n)
    for m in range(hs.shape[0]):
        h = hs[m]
        rk_stages(x, p, h, a, k, xt, 0, s)
        rk_combine(x, h, b, k, s, x)
    return x


@jit
def rk_stage(x, p, h, a, k, xt, i):
    """Stage ``i`` of an explicit Runge-Kutta step ``h`` from ``x``: its state into ``xt``, its slope into ``k[i]``
    (the slopes ``k[:i]`` before it already there)."""
    for q in range(n):
        acc = x[q]
        for j in range(i):
            acc += h * a[i, j] * k[j, q]
        xt[q] = acc
    hom_rhs(xt, p, k[i])


@jit
def rk_stages(x, p, h, a, k, xt, first, s):
    """The stage slopes ``k[first:s]`` of an explicit Runge-Kutta step ``h`` from ``x``."""
    for i in range(first, s):
        rk_stage(x, p, h, a, k, xt, i)


@jit
def rk_combine(x, h, b, k, s, out):
    """``out = x + h sum_i b_i k_i`` (``out`` may be ``x``)."""
    for q in range(n):
        acc = 0.0
        for i in range(s):
            acc += b[i] * k[i, q]
        out[q] = x[q] + h * acc

@jit
def monodromy_one(x0, p, hs, c, a, b, lam, M):
    """The monodromy of one real mode ``lam`` over the steps ``hs`` into ``M``
    (the Runge-Kutta solution of the joint system ``[x; Phi]``, without the
    polynomials in ``Lambda``). Returns the final state."""
    s = c.shape[0]
    x = x0.copy()
    k = np.empty((s, n))
    xt = np.empty(n)
    A = np.empty((n, n))
    Bm = np.empty((n, n))
    Kp = np.empty((s, n, n))
    Y = np.empty((n, n))
    Z = np.empty((n, n))
    for r in range(n):
        for q in range(n):
            M[r, q] = 1.0 if r == q else 0.0
    for m in range(hs.shape[0]):
        h = hs[m]
        for i in range(s):
            rk_stage(x, p, h, a, k, xt, i)
            mode_ab(xt, p, A, Bm)
            for r in range(n):
                for q in range(n):
                    Y[r, q] = M[r, q]
            for j in range(i):
                cij = h * a[i, j]
                if cij != 0.0:
                    for r in range(n):
                        for q in range(n):
                            Y[r, q] += cij * Kp[j, r, q]
            for r in range(n):
                for q in range(n):
                    Kp[i, r, q] = 0.0
                for t in range(n):
                    jrt = A[r, t] + lam * Bm[r, t]
                    if jrt != 0.0:
                        for q in range(n):
                            Kp[i, r, q] += jrt * Y[t, q]
        rk_combine(x, h, b, k, s, x)
        for r in range(n):
            for q in range(n):
                Z[r, q] = M[r, q]
        for i in range(s):
            hb = h * b[i]
            if hb != 0.0:
                for r in range(n):
                    for q in range(n):
                        Z[r, q] += hb * Kp[i, r, q]
        for r in range(n):
            for q in range(n):
                M[r, q] = Z[r, q]
    return x

@jit
def propagate(lams, P, out):
    """Monodromy ``prod_m P_m(lams[k])`` of every mode into ``out[k]``."""
    nsteps = P.shape[0]
    deg = P.shape[1] - 1
    E = np.empty((n, n), dtype=out.dtype)
    Z = np.empty((n, n), dtype=out.dtype)
    for kk in range(lams.shape[0]):
        lam = lams[kk]
        M = out[kk]
        for r in range(n):
            for q in range(n):
                M[r, q] = 0.0
            M[r, r] = 1.0
        for m in range(nsteps):
            Pm = P[m]
            for r in range(n):
                for q in range(n):
                    acc = Pm[deg, r, q] + 0.0 * lam
                    for d in range(deg - 1, -1, -1):
                        acc = acc * lam + Pm[d, r, q]
                    E[r, q] = acc
            for r in range(n):
                for q in range(n):
                    acc = 0.0 * lam
                    for t in range(n):
                        acc += E[r, t] * M[t, q]
                    Z[r, q] = acc
            for r in range(n):
                for q in range(n):
                    M[r, q] = Z[r, q]

@jit
def propagate_modes(lams, P, out):
    """As ``propagate``, with the modes innermost so that the loops vectorise
    over modes: per step ``E_k = sum_d lams[k]**d P[m, d]``, then ``M_k <- E_k M_k``."""
    nsteps = P.shape[0]
    deg = P.shape[1] - 1
    K = lams.shape[0]
    pw = np.empty((deg + 1, K), dtype=out.dtype)
    for kk in range(K):
        v = lams[kk] * 0.0 + 1.0
        for d in range(deg + 1):
            pw[d, kk] = v
            v = v * lams[kk]
    M = np.zeros((n, n, K), dtype=out.dtype)
    for r in range(n):
        for kk in range(K):
            M[r, r, kk] = 1.0
    E = np.empty((n, n, K), dtype=out.dtype)
    Z = np.empty((n, n, K), dtype=out.dtype)
    for m in range(nsteps):
        for r in range(n):
            for q in range(n):
                for kk in range(K):
                    E[r, q, kk] = P[m, 0, r, q]
                for d in range(1, deg + 1):
                    coef = P[m, d, r, q]
                    if coef != 0.0:
                        for kk in range(K):
                            E[r, q, kk] += coef * pw[d, kk]
        for r in range(n):
            for q in range(n):
                for kk in range(K):
                    Z[r, q, kk] = 0.0
                for t in range(n):
                    for kk in range(K):
                        Z[r, q, kk] += E[r, t, kk] * M[t, q, kk]
        for r in range(n):
            for q in range(n):
                for kk in range(K):
                    M[r, q, kk] = Z[r, q, kk]
    for kk in range(K):
        for r in range(n):
            for q in range(n):
                out[kk, r, q] = M[r, q, kk]

@jit
def dop853(x0, p, t_end, rtol, atol, h0, c, a, b, E3, E5, hs, ys, record):
    """Adaptive DOP853 of the homogeneous system on ``[0, t_end]`` (scipy's
    error norm and step control). Accepted step sizes go to ``hs``; when
    ``record`` the state after each step goes to ``ys[1:]`` (``ys[0] = x0``).
    Returns ``(x_end, n_steps, status)``: status 0 ok, 1 too many steps,
    2 step size underflow, 3 non-finite state."""
    s = c.shape[0]
    x = x0.copy()
    k = np.empty((s + 1, n))
    xt = np.empty(n)
    xn = np.empty(n)
    hom_rhs(x, p, k[0])
    t = 0.0
    h = h0
    m = 0
    if record:
        ys[0, :] = x
    while t < t_end:
        if m >= hs.shape[0]:
            return x, m, 1
        h = min(h, t_end - t)
        if h < 1e-14 * max(1.0, abs(t)):
            return x, m, 2
        rejected = False
        while True:
            rk_stages(x, p, h, a, k, xt, 1, s)
            rk_combine(x, h, b, k, s, xn)
            hom_rhs(xn, p, k[s])
            e5 = 0.0
            e3 = 0.0
            for q in range(n):
                sc = atol + rtol * max(abs(x[q]), abs(xn[q]))
                d5 = 0.0
                d3 = 0.0
                for i in range(s + 1):
                    d5 += E5[i] * k[i, q]
                    d3 += E3[i] * k[i, q]
                e5 += (d5 / sc) ** 2
                e3 += (d3 / sc) ** 2
            if e5 == 0.0 and e3 == 0.0:
                err = 0.0
            else:
                err = h * e5 / np.sqrt((e5 + 0.01 * e3) * n)
            if not np.isfinite(err):
                err = np.inf
            if err < 1.0:
                factor = 10.0 if err == 0.0 else min(10.0, 0.9 * err ** (-1.0 / 8.0))
                if rejected:
                    factor = min(1.0, factor)
                break
            h *= max(0.2, 0.9 * err ** (-1.0 / 8.0)) if np.isfinite(err) else 0.2
            rejected = True
            if h < 1e-14 * max(1.0, abs(t)):
                return x, m, 2
        for q in range(n):
            if not np.isfinite(xn[q]):
                return x, m, 3
            x[q] = xn[q]
            k[0, q] = k[s, q]
        t += h
        hs[m] = h
        m += 1
        if record:
            ys[m, :] = x
        h *= factor
    return x, m, 0

@jit
def rhs(x, p):
    out = np.empty(n)
    hom_rhs(x, p, out)
    return out

@jit
def jacobian(x, p):
    A = np.empty((n, n))
    Bm = np.empty((n, n))
    mode_ab(x, p, A, Bm)
    for r in range(n):
        for q in range(n):
            A[r, q] += UNIFORM * Bm[r, q]
    return A

@jit
def shoot(x, T, M, have_M, p, c, a, b, E3, E5, rtol, tol, period_change, max_chord, max_newton, max_steps):
    """Newton on ``phi_T(x) = x`` with the phase condition ``(x - x_guess) . f(x_guess) = 0`` (the loop of
    ``bifnet.transverse.maps._shoot``, compiled: no Python per iteration). Chord iterations with the
    monodromy ``M`` (when ``have_M``) first, then a fresh monodromy at every iterate.
    Returns ``(status, x, T, amplitude, iterations)``: status 0 converged (period within
    ``period_change`` of the guess), 1 converged too far in period, 2 failed."""
    x = x.copy()
    g = np.empty(n)
    hom_rhs(x, p, g)
    x_g = x.copy()
    T_g = T
    fresh = not have_M
    use_M = have_M
    Mc = M.copy()
    hs = np.empty(max_steps)
    ys = np.empty((max_steps + 1, n))
    amplitude = np.empty(n)
    G = np.zeros((n + 1, n + 1))
    rv = np.empty(n + 1)
    fT = np.empty(n)
    iterations = 0
    while iterations < max_chord + max_newton:
        h0 = min(1e-2, 1e-3 * T)
        xT, m, status = dop853(x, p, T, rtol, 1e-2 * rtol, h0, c, a, b, E3, E5, hs, ys, True)
        if status != 0:
            return 2, x, T, amplitude, iterations
        err = 0.0
        for q in range(n):
            lo = ys[0, q]
            hi = ys[0, q]
            for i in range(1, m + 1):
                v = ys[i, q]
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
            amplitude[q] = max(hi - lo, 1e-9)
            e = abs(xT[q] - x[q]) / amplitude[q]
            if e > err:
                err = e
        if err < tol:
            if abs(T - T_g) <= period_change * T_g:
                return 0, x, T, amplitude, iterations
            return 1, x, T, amplitude, iterations
        if (iterations >= max_chord and not fresh) or not use_M:
            monodromy_one(x, p, hs[:m], c, a, b, UNIFORM, Mc)
            use_M = True
            fresh = True
        hom_rhs(xT, p, fT)
        for r in range(n):
            for q in range(n):
                G[r, q] = Mc[r, q] - (1.0 if r == q else 0.0)
            G[r, n] = fT[r]
            G[n, r] = g[r]
            rv[r] = -(xT[r] - x[r])
        G[n, n] = 0.0
        acc = 0.0
        for q in range(n):
            acc += (x[q] - x_g[q]) * g[q]
        rv[n] = -acc
        try:
            delta = np.linalg.solve(G, rv)
        except Exception:
            return 2, x, T, amplitude, iterations
        for q in range(n):
            x[q] += delta[q]
        T = T + delta[n]
        iterations += 1
        if fresh:
            use_M = False  # a new monodromy at the next iterate
        if not (np.isfinite(T) and T > 0):
            return 2, x, T, amplitude, iterations
        for q in range(n):
            if not np.isfinite(x[q]):
                return 2, x, T, amplitude, iterations
    return 2, x, T, amplitude, iterations

'''


def floquet_module_source(model: NodeModel) -> str:
    """Source of ``model``'s Floquet kernel module (homogeneous flow, ``A`` and ``B``, propagators)."""
    from bifnet.systems import homogeneous_system, mode_jacobian

    hom = homogeneous_system(model)
    mj = mode_jacobian(model)
    n = model.n_variables
    xs = {s: sympy.Symbol(f"x[{i}]") for i, s in enumerate(mj.state)}
    ps = {s: sympy.Symbol(f"p[{i}]") for i, s in enumerate(mj.parameters)}
    subs = {**xs, **ps}
    src_f = _compile_source("hom_rhs", ["x", "p", "out"], [(f"out[{i}]", hom.rhs[i]) for i in range(n)], subs)
    targets = [(f"A[{i}, {j}]", mj.A[i, j]) for i in range(n) for j in range(n)]
    targets += [(f"B[{i}, {j}]", mj.B[i, j]) for i in range(n) for j in range(n)]
    src_j = _compile_source("mode_ab", ["x", "p", "A", "B"], targets, subs)
    constants = f"n = {n}\nUNIFORM = {float(mj.uniform)!r}\n"
    return (f"{_KERNEL_HEADER}# model {model.name!r}\n{constants}\n\n@jit\n{src_f}\n\n\n@jit\n{src_j}\n\n\n"
            f"{_KERNEL_BODY}")


@functools.lru_cache(maxsize=None)
def _kernels(model: NodeModel):
    """The Floquet kernels of ``model``: compiled once per machine (numba's disk cache).

    Returns a dict with ``step_polynomials`` (integrate the cycle and build
    each step's propagator as a polynomial in ``Lambda``), ``propagate`` and
    ``propagate_modes`` (monodromies of ``K`` modes, one at a time or all
    together with the modes innermost), ``dop853`` (the homogeneous flow, adaptive),
    ``rhs`` and ``jacobian`` (of the homogeneous system). The module is
    generated from the model (:func:`floquet_module_source`), written to
    :func:`bifnet.codegen.kernel_cache_dir` and compiled with
    ``cache=True``, like the network kernels.
    """
    import re

    from bifnet.codegen import keyed_kernel_module, model_key

    # the generating code enters the key, so that a changed bifnet never reuses a stale module
    import bifnet.codegen
    import bifnet.systems
    from pathlib import Path

    # ... and the kernel template this process holds: a process started before bifnet changed on disk
    # must not file its old kernels under the new files' key (it did, with `shoot` missing)
    sources = [Path(m.__file__).read_text() for m in (bifnet.codegen, bifnet.systems)] + [Path(__file__).read_text()]
    key = model_key(model, *sources, _KERNEL_HEADER, _KERNEL_BODY)
    module = keyed_kernel_module(key, "floquet_" + re.sub(r"\W", "_", model.name),
                                 lambda: floquet_module_source(model))
    return {name: getattr(module, name) for name in ("step_polynomials", "monodromy_one", "flow_fixed", "propagate",
                                                    "propagate_modes", "dop853", "rhs", "jacobian", "shoot")}


def _uniform(model: NodeModel) -> float:
    """Eigenvalue of the uniform mode: 1 (additive), 0 (diffusive); 1 without coupling (B is then unused)."""
    return model.coupling.uniform_eigenvalue if model.coupling is not None else 1.0


def _monodromies(model, p, x0, hs, lams, method):
    """Monodromy matrices ``(K, n, n)`` over the steps ``hs`` and the final state."""
    ker = _kernels(model)
    c, a, b = _tableau(method)
    n = model.n_variables
    hs = np.ascontiguousarray(hs, dtype=float)
    lams = np.asarray(lams)
    if lams.size == 1 and not np.iscomplexobj(lams):
        # one real mode (shooting, the homogeneous multipliers): the joint system directly
        out = np.empty((1, n, n))
        x_end = ker["monodromy_one"](np.asarray(x0, dtype=float), p, hs, c, a, b, float(lams.ravel()[0]), out[0])
        return out, x_end
    P = np.empty((hs.size, c.size + 1, n, n))
    x_end = ker["step_polynomials"](np.asarray(x0, dtype=float), p, hs, c, a, b, P)
    dtype = complex if np.iscomplexobj(lams) else float
    lams = np.ascontiguousarray(lams, dtype=dtype)
    out = np.empty((lams.size, n, n), dtype=dtype)
    # many modes: the mode-innermost kernel (vectorised); a few: one mode at a time
    ker["propagate_modes" if lams.size > 4 else "propagate"](lams, P, out)
    return out, x_end


def _sorted_eigenvalues(M: np.ndarray) -> np.ndarray:
    mu = np.linalg.eigvals(M)
    order = np.argsort(-np.abs(mu), axis=-1, kind="stable")
    return np.take_along_axis(mu, order, axis=-1)


@functools.lru_cache(maxsize=None)
def _dop853_errors():
    """DOP853's error-estimate weights ``(E3, E5)`` as the ``dop853`` kernel takes them (cached)."""
    from scipy.integrate._ivp import dop853_coefficients as dc

    nst = dc.N_STAGES
    return np.ascontiguousarray(dc.E3[:nst + 1]), np.ascontiguousarray(dc.E5[:nst + 1])


def _integrate(model, p, x0, t_end, rtol, *, record=False, max_steps=1_000_000):
    """Adaptive DOP853 (compiled) from ``x0`` over ``[0, t_end]``.

    Returns ``(x_end, hs, ys)``: accepted step sizes and, with ``record``, the
    states at the step ends (``ys[0] = x0``)."""
    ker = _kernels(model)
    c, a, b = _tableau("dop853")
    E3, E5 = _dop853_errors()
    hs = np.empty(max_steps)
    n = model.n_variables
    ys = np.empty((max_steps + 1 if record else 1, n))
    h0 = min(1e-2, 1e-3 * t_end)
    x_end, m, status = ker["dop853"](np.asarray(x0, dtype=float), p, float(t_end), rtol, 1e-2 * rtol, h0, c, a, b,
                                     E3, E5, hs, ys, record)
    if status != 0:
        why = {1: f"more than {max_steps} steps", 2: "step size too small", 3: "non-finite state"}[status]
        raise ContinuationError(f"integration of the homogeneous system failed after {m} steps: {why}")
    return x_end, hs[:m].copy(), (ys[:m + 1].copy() if record else None)


def _mesh(model, p, x0, period, steps, rtol):
    """Step sizes over one period: ``steps`` equal steps, or (``steps=None``)
    the steps an adaptive DOP853 integration of the cycle takes at ``rtol``."""
    if steps is not None:
        return np.full(steps, period / steps)
    _, hs, _ = _integrate(model, p, x0, period, rtol)
    return hs * (period / hs.sum())


# ---------------------------------------------------------------------------
# public API

def homogeneous_floquet(model: NodeModel, cycle: HomogeneousCycle, *, steps: int | None = None,
                        method: str = "dop853", rtol: float = 1e-10) -> np.ndarray:
    """Floquet multipliers of the homogeneous cycle (mode ``Lambda = 1``).

    Parameters
    ----------
    model : NodeModel
    cycle : HomogeneousCycle
    steps, method, rtol
        As in :func:`floquet_dispersion`.

    Returns
    -------
    ndarray, shape (n,), complex
        Multipliers sorted by decreasing modulus; one of them is 1 (trivial).

    Examples
    --------
    >>> mu = homogeneous_floquet(model, find_cycle(model, {"eps": 15, "Iext_e": 6}))
    """
    return floquet_dispersion(model, cycle, np.array([_uniform(model)]), steps=steps, method=method,
                              rtol=rtol).multipliers[0]


def floquet_dispersion(model: NodeModel, cycle: HomogeneousCycle, Lambdas, *, steps: int | None = None,
                       method: str = "dop853", rtol: float = 1e-10) -> FloquetDispersion:
    """Floquet multipliers of every connectome mode along a homogeneous cycle.

    Parameters
    ----------
    model : NodeModel
    cycle : HomogeneousCycle
        The homogeneous periodic orbit (from :func:`find_cycle` or
        :func:`cycle_from_branch`).
    Lambdas : array_like, shape (K,)
        Connectome eigenvalues, real or complex.
    steps : int, optional
        Equal Runge–Kutta steps over one period. By default (``None``) the
        mesh is the one an adaptive DOP853 integration of the cycle takes at
        ``rtol`` (small steps on the spikes): on the ngnmm_ping test cycle,
        142 steps and multipliers to about 1e-10 relative to
        ``max(1, |mu|_max)``; equal steps need about 800 (``"dop853"``) or
        4000 (``"rk4"``) for 1e-9.
    method : {"dop853", "rk4"}
        Runge–Kutta tableau applied on the mesh: the 12-stage 8th-order
        Dormand–Prince scheme or classical RK4 (use equal ``steps`` with RK4).
    rtol : float
        Tolerance of the adaptive integration that chooses the mesh
        (``atol = rtol / 100``); ignored when ``steps`` is given.

    Returns
    -------
    FloquetDispersion

    Raises
    ------
    ValueError
        For a bad ``method``, ``steps`` or ``Lambdas``.

    Notes
    -----
    The cycle is integrated once on the mesh with the explicit Runge–Kutta
    tableau. As the variational equation ``Phi' = (A + Lambda u e_c^T) Phi``
    is linear, one Runge–Kutta step of it maps ``Phi_m`` to
    ``P_m(Lambda) Phi_m`` with ``P_m`` a matrix polynomial in ``Lambda`` of
    degree equal to the number of stages; its coefficients are computed once
    per step, during the cycle integration, independent of the modes. Each
    mode then costs one Horner evaluation and one ``n x n`` product per step:
    ``M(Lambda) = P_{N-1}(Lambda) ... P_0(Lambda)``. The result is exactly
    the Runge–Kutta solution of the joint system ``[x; Phi_1; ...; Phi_K]``.
    Real ``Lambdas`` use real arithmetic.

    Examples
    --------
    >>> lam = load_connectome("tvb68").row_normalised().spectrum().eigenvalues
    >>> disp = floquet_dispersion(model, cycle, lam)
    >>> disp.to_frame().head()
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    if steps is not None:
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer or None, got {steps!r}")
        steps = int(steps)
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be in (0, 1), got {rtol!r}")
    lam = np.atleast_1d(np.asarray(Lambdas))
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError("Lambdas must be a non-empty 1-D array of finite numbers")
    if np.iscomplexobj(lam) and np.all(np.imag(lam) == 0):
        work = np.real(lam).astype(float)
    else:
        work = lam.astype(complex) if np.iscomplexobj(lam) else lam.astype(float)
    if not (np.isfinite(cycle.period) and cycle.period > 0):
        raise ValueError(f"cycle.period must be positive, got {cycle.period!r}")
    p = _parameter_vector(model, cycle.parameters)
    T = float(cycle.period)
    hs = _mesh(model, p, cycle.x0, T, steps, rtol)
    M, _ = _monodromies(model, p, cycle.x0, hs, work, method)
    mu = _sorted_eigenvalues(M).astype(complex)
    with np.errstate(divide="ignore"):
        expo = np.log(mu) / T
    K = lam.size
    uniform = _uniform(model)
    growth = np.empty(K)
    freq = np.empty(K)
    for k in range(K):
        candidates = np.arange(mu.shape[1])
        if abs(lam[k] - uniform) <= HOMOGENEOUS_TOLERANCE:
            trivial = int(np.argmin(np.abs(mu[k] - 1.0)))
            candidates = candidates[candidates != trivial]
        best = candidates[np.argmax(expo[k, candidates].real)]
        growth[k] = expo[k, best].real
        freq[k] = abs(expo[k, best].imag) / (2.0 * np.pi) * 1000.0
    return FloquetDispersion(Lambda=lam, multipliers=mu, exponents=expo, growth_rate=growth,
                             frequency_hz=freq, period=T, steps=hs.size, method=method)


def cycle_from_branch(branch, index: int) -> HomogeneousCycle:
    """The homogeneous cycle at row ``index`` of an AUTO cycle branch.

    Parameters
    ----------
    branch : bifnet.continuation.Branch
        A branch of kind ``CYCLES`` whose engine kept the solution points.
    index : int
        Row on the branch (negative counts from the end).

    Returns
    -------
    HomogeneousCycle
        ``x0`` is the first mesh point of AUTO's orbit profile, ``period`` the
        branch's ``period`` column, ``parameters`` the branch parameters updated
        with the free columns at ``index``.

    Raises
    ------
    ContinuationError
        If the branch is not a cycle branch or kept no orbit for that row.
    """
    from bifnet.continuation.branch import BranchKind

    if branch.kind is not BranchKind.CYCLES:
        raise ContinuationError(f"branch {branch.name!r} is a {branch.kind.value} branch, not cycles")
    n_rows = len(branch)
    if not -n_rows <= index < n_rows:
        raise IndexError(f"index {index} out of range for branch {branch.name!r} with {n_rows} rows")
    index = index % n_rows
    points = (branch.engine or {}).get("points", {})
    raw = points.get(index) if isinstance(points, Mapping) else (points[index] if index < len(points) else None)
    orbit = getattr(raw, "periodic_orbit", None)
    if orbit is None:
        raise ContinuationError(f"branch {branch.name!r} kept no periodic orbit for row {index}")
    parameters = {k: float(v) for k, v in dict(branch.parameters).items()}
    for name in branch.free:
        if name in branch.columns:
            parameters[name] = float(branch[name][index])
    state = np.asarray(orbit.state, dtype=float)
    return HomogeneousCycle(parameters=parameters, period=float(branch["period"][index]),
                            x0=state[0].copy())


def find_cycle(model: NodeModel, parameters: Mapping[str, float], x0=None, *, period_guess: float | None = None,
               transient: float = 2000.0, section: str | None = None, tol: float = 1e-11,
               max_iterations: int = 20) -> HomogeneousCycle:
    """Find the homogeneous limit cycle attracting ``x0`` and refine it by shooting.

    Parameters
    ----------
    model : NodeModel
    parameters : mapping of str to float
        Overrides of the model defaults.
    x0 : array_like, optional
        Initial state (default: the model's initial guesses).
    period_guess : float, optional
        Period estimate (ms); by default measured from section crossings.
    transient : float
        Integration time (ms) to reach the attractor.
    section : str, optional
        Variable of the Poincaré section (default: the second variable,
        ``v_e`` for ngnmm_ping); the section is at the mid-range of that
        variable on the attractor, crossed upwards.
    tol : float
        Newton stops when ``|phi_T(x0) - x0|`` (max norm, relative to the
        orbit's amplitude) is below this.
    max_iterations : int

    Returns
    -------
    HomogeneousCycle
        With ``x0`` on the section and the refined period.

    Raises
    ------
    ContinuationError
        If the trajectory settles on an equilibrium (or does not oscillate),
        or Newton's method does not converge.

    Notes
    -----
    The transient and a 500 ms observation window (``4 * period_guess``)
    are integrated by a compiled adaptive DOP853 (scipy's error control,
    rtol 1e-10); an equilibrium is recognised by every variable's range
    being below 1e-6 of its size. Shooting: Newton on ``(x0, T)`` for
    ``phi_T(x0) - x0 = 0`` with the phase condition ``x0[section] = value``;
    the flow is integrated at rtol 1e-12 and the Jacobian
    ``[[M - I, f(phi_T(x0))], [e_s^T, 0]]`` uses the monodromy ``M`` of the
    homogeneous Jacobian on the same steps.

    Examples
    --------
    >>> cycle = find_cycle(load_model("ngnmm_ping"), {"eps": 15, "Iext_e": 6})
    >>> round(cycle.period, 2)
    31.11
    """
    params = model.resolve_parameters(parameters)
    p = _parameter_vector(model, params)
    n = model.n_variables
    names = model.variable_names
    if section is None:
        section = names[1 if n > 1 else 0]
    if section not in names:
        raise ValueError(f"section must be a variable of {model.name!r} ({', '.join(names)}), got {section!r}")
    iv = names.index(section)
    x = model.default_state() if x0 is None else np.asarray(x0, dtype=float)
    if x.shape != (n,):
        raise ValueError(f"x0 must have shape ({n},), got {x.shape}")
    if transient < 0:
        raise ValueError(f"transient must be non-negative, got {transient!r}")
    if period_guess is not None and not period_guess > 0:
        raise ValueError(f"period_guess must be positive, got {period_guess!r}")
    rhs = _kernels(model)["rhs"]
    where = ", ".join(f"{k}={params[k]:g}" for k in parameters)

    if transient > 0:
        x, _, _ = _integrate(model, p, x, transient, 1e-10)
    # observe the attractor
    window = 4.0 * period_guess if period_guess else 500.0
    _, hs, X = _integrate(model, p, x, window, 1e-10, record=True)
    t = np.concatenate([[0.0], np.cumsum(hs)])
    X = X.T
    span = X.max(axis=1) - X.min(axis=1)
    scale = np.maximum(np.abs(X).max(axis=1), 1e-12)
    if np.all(span <= 1e-6 * scale):
        raise ContinuationError(
            f"find_cycle: the trajectory converged to an equilibrium, not a limit cycle "
            f"(at {where}; state {np.round(X[:, -1], 6).tolist()})")
    value = 0.5 * (X[iv].max() + X[iv].min())
    v = X[iv] - value
    ups = np.nonzero((v[:-1] < 0) & (v[1:] >= 0))[0]
    if len(ups) < 2 and period_guess is None:
        raise ContinuationError(f"find_cycle: fewer than two upward crossings of {section} = {value:.6g} "
                                f"in {window:g} ms at {where}; no periodic orbit found (try period_guess)")
    if len(ups) == 0:
        raise ContinuationError(f"find_cycle: no upward crossing of {section} = {value:.6g} in {window:g} ms "
                                f"at {where}")

    def crossing(i):
        w = -v[i] / (v[i + 1] - v[i])
        return t[i] + w * (t[i + 1] - t[i]), X[:, i] + w * (X[:, i + 1] - X[:, i])

    t0, y = crossing(ups[-2] if len(ups) >= 2 else ups[-1])
    T = crossing(ups[-1])[0] - t0 if period_guess is None else float(period_guess)
    y[iv] = value
    amplitude = np.maximum(span, 1e-12)
    err = np.inf
    for it in range(max_iterations):
        yT, hs, _ = _integrate(model, p, y, T, 1e-12)
        res = yT - y
        err = float(np.max(np.abs(res) / amplitude))
        log.debug("find_cycle: iteration %d, residual %.3e, T = %.12g", it, err, T)
        if err < tol:
            return HomogeneousCycle(parameters=dict(params), period=float(T), x0=y.copy())
        M, _ = _monodromies(model, p, y, hs, np.array([_uniform(model)]), "dop853")
        G = np.zeros((n + 1, n + 1))
        G[:n, :n] = M[0] - np.eye(n)
        G[:n, n] = rhs(yT, p)
        G[n, iv] = 1.0
        delta = np.linalg.solve(G, np.concatenate([-res, [value - y[iv]]]))
        y = y + delta[:n]
        T = T + delta[n]
        if not (np.isfinite(T) and T > 0 and np.all(np.isfinite(y))):
            break
    raise ContinuationError(f"find_cycle: shooting did not converge in {max_iterations} iterations at {where} "
                            f"(last residual {err:.3e}, period {T:.6g} ms)")
