"""Verification of LPC, PD and NS points of homogeneous cycles by multiple shooting.

The period is cut into ``m`` segments (:data:`SEGMENTS`, each with the same
number of steps of an adaptive run at rtol 1e-12 from the engine's orbit, so
that fast parts of the orbit get short segments). Unknowns
``u = (x_0, ..., x_{m-1}, T, a)`` (``m n + 2``): the state at the start of
each segment, the period and the free parameter. Equations:

* ``phi_{tau_k T}(x_k; a) - x_{k+1} = 0`` (``k = 0 .. m-1``, ``x_m = x_0``),
  integrated with bifnet's compiled 8th-order Dormand–Prince scheme on that
  fixed mesh (:mod:`bifnet.transverse.floquet`), with the segment's
  monodromy ``M_k`` from the same steps;
* the phase condition ``(x_0 - x_ref) . f(x_ref) = 0``;
* the multiplier condition ``g(u) = 0``: the bordered determinant of the
  cyclic block matrix ``C`` (``M_k`` on the diagonal, ``-I`` to the right,
  wrapping round) bordered by ``d/dT`` and the phase row (LPC: the shooting
  system is singular, a double multiplier 1); of ``C`` with ``+I`` in the
  wrapping block (PD: ``M_{m-1} ... M_0`` has the multiplier -1); or
  ``|mu|^2 - 1`` of the complex pair of ``M_{m-1} ... M_0`` closest to the
  unit circle (NS).

Single shooting is hopeless near a homoclinic orbit: an orbit that passes
close to a saddle amplifies perturbations of its initial state by 1e6 and
more before contracting them again, so Newton's method stalls at residuals of
1e-8 (measured on the ngnmm_ping eps = 29.5 branch). Segments keep each flow
map moderate; the block matrices are well conditioned.

Newton's method with a line search: the shooting rows of the Jacobian are
exact (``M_k``, ``-I``, ``tau_k f``), the parameter column and the row of
``g`` are central differences (only segment ``k`` is integrated again for a
change of ``x_k``). The linear systems are solved after row and column
equilibration. The residual reported is the max-norm of all equations (the
shooting part relative to ``max(1, |x|)`` over the orbit), with every segment
integrated again adaptively at rtol 1e-12 at the end.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numba
import numpy as np
from scipy.linalg.lapack import dgetrf, dgetrs

from bifnet.continuation.branch import Branch, SpecialKind, SpecialPoint
from bifnet.continuation.verify import RESIDUAL_TOLERANCE, TRIVIAL_WARNING, Verification, _close_to_branch
from bifnet.errors import ContinuationError

SEGMENTS = 16   #: shooting segments per period (fewer when the adaptive run takes fewer than 8 steps each)


MIN_CYCLES = 8   #: periodic QR cycles before couplings that no longer shrink may join two multipliers in a block


@numba.njit(cache=True, nogil=True)
def _householder_qr(A, Q, R):
    """``A = Q R`` of a small square matrix by Householder reflections, into ``Q`` and ``R``."""
    n = A.shape[0]
    R[:, :] = A
    Q[:, :] = 0.0
    for i in range(n):
        Q[i, i] = 1.0
    v = np.empty(n)
    for k in range(n - 1):
        norm = 0.0
        for i in range(k, n):
            norm += R[i, k] * R[i, k]
        norm = np.sqrt(norm)
        if norm == 0.0:
            continue
        alpha = -norm if R[k, k] >= 0.0 else norm
        vv = 0.0
        for i in range(k, n):
            v[i] = R[i, k]
        v[k] -= alpha
        for i in range(k, n):
            vv += v[i] * v[i]
        if vv == 0.0:
            continue
        for j in range(k, n):   # R <- (I - 2 v v^T / v^T v) R
            d = 0.0
            for i in range(k, n):
                d += v[i] * R[i, j]
            d *= 2.0 / vv
            for i in range(k, n):
                R[i, j] -= d * v[i]
        for i in range(n):      # Q <- Q (I - 2 v v^T / v^T v)
            d = 0.0
            for j in range(k, n):
                d += Q[i, j] * v[j]
            d *= 2.0 / vv
            for j in range(k, n):
                Q[i, j] -= d * v[j]
        for i in range(k + 1, n):
            R[i, k] = 0.0


@numba.njit(cache=True, nogil=True)
def _periodic_qr(Ms, tolerance, max_cycles):
    """Cycles of the periodic QR iteration ``M_k Q_k = Q_{k+1} R_k`` (``Q_0 = I``, then the last
    ``Q_m``) until every lower entry of ``G = Q_0^T Q_m`` is below ``tolerance``, or, after at least
    :data:`MIN_CYCLES`, shrank by less than a factor 5 in each of the last three cycles (early on the
    columns still change places and entries grow for a while). Returns ``(G, R_0 .. R_{m-1})`` of
    the last cycle."""
    m, n = Ms.shape[0], Ms.shape[1]
    Q0 = np.eye(n)
    Q = np.empty((n, n))
    Rs = np.empty_like(Ms)
    G = np.eye(n)
    previous = np.full((n, n), np.inf)
    slow = np.zeros((n, n), dtype=np.int64)   # cycles in a row an entry shrank by less than a factor 5
    for cycle in range(max_cycles):
        Q[:, :] = Q0
        for k in range(m):
            _householder_qr(Ms[k] @ Q, Q, Rs[k])
        G = Q0.T @ Q
        Q0[:, :] = Q
        converged, settled = True, True
        for i in range(n):
            for j in range(i):
                g = abs(G[i, j])
                slow[i, j] = slow[i, j] + 1 if g > 0.2 * previous[i, j] else 0
                previous[i, j] = g
                if g > tolerance:
                    converged = False
                    if slow[i, j] < 3:
                        settled = False
        if cycle > 0 and (converged or (settled and cycle + 1 >= MIN_CYCLES)):
            break
    return G, Rs


@numba.njit(cache=True, nogil=True)
def _block_product(Rs, start, end):
    """``(R_{m-1})_bb ... (R_0)_bb`` for ``b = start:end``, as a matrix of largest entry 1 and the
    logarithm of its scale (``inf`` where it vanishes or overflows)."""
    T = np.eye(end - start)
    scale = 0.0
    for k in range(Rs.shape[0]):
        T = np.ascontiguousarray(Rs[k, start:end, start:end]) @ T
        norm = np.max(np.abs(T))
        if not np.isfinite(norm) or norm == 0.0:
            return T, np.inf
        T /= norm
        scale += np.log(norm)
    return T, scale


def product_eigenvalues(Ms: np.ndarray, *, tolerance: float = 1e-14, max_cycles: int = 60) -> np.ndarray:
    """Eigenvalues of the product ``M_{m-1} ... M_1 M_0`` without forming it, largest modulus first.

    The explicit product of the segment monodromies of a strongly unstable orbit has a norm of 1e18
    and more (ngnmm_ping at eps = 30, periods above 200 ms), and its eigenvalues other than the largest
    are then rounding noise of size ``eps ||M||``: 422 where the true multiplier is 2e-6. Here the
    product is reduced by the periodic QR iteration: ``M_k Q_k = Q_{k+1} R_k`` with ``Q_0 = Q_m``
    after convergence, so that ``Q_0^T M Q_0 = G R_{m-1} ... R_0`` with ``G = Q_0^T Q_m`` block
    diagonal up to ``tolerance`` (1x1 blocks of +-1 for real multipliers, rotations for complex pairs
    and for multipliers of about the same modulus, which the iteration separates slowly or not at all;
    :func:`_periodic_qr` stops when every coupling is below ``tolerance`` or the rest keep shrinking
    by less than a factor 5 per cycle, the ratio of the two moduli, and those join their indices in one
    block, whose eigenvalues then differ by less than that factor). The eigenvalues
    are those of the diagonal blocks ``G_bb (R_{m-1})_bb ... (R_0)_bb`` (the diagonal block of a product
    of triangular matrices is the product of their diagonal blocks), each block product kept in scale
    by a running logarithm. Each factor is computed with a relative error of the order of the rounding
    unit, so multipliers of every size, their signs included, are as accurate as the segment
    monodromies themselves (the periodic Schur decomposition's accuracy, e.g. Lust 2001)."""
    Ms = np.ascontiguousarray(Ms, dtype=float)
    n = Ms.shape[1]
    G, Rs = _periodic_qr(Ms, tolerance, max_cycles)
    # blocks: no remaining lower coupling of G (row i, column j < i) crosses a boundary between them
    joined = np.zeros(n + 1, dtype=bool)   # joined[k]: indices k - 1 and k are in one block
    for i, j in zip(*np.nonzero(np.abs(np.tril(G, -1)) > tolerance)):
        joined[j + 1:i + 1] = True
    bounds = [k for k in range(1, n) if not joined[k]]
    out = []
    for start, end in zip([0] + bounds, bounds + [n]):
        b = slice(start, end)
        T, scale = _block_product(Rs, start, end)
        if not np.isfinite(scale):
            return np.full(n, np.nan + 0j)
        mu = np.linalg.eigvals(G[b, b] @ T)
        with np.errstate(over="ignore"):
            out.extend(mu * np.exp(scale))
    out = np.asarray(out, dtype=complex)
    return out[np.argsort(-np.abs(out), kind="stable")]


def _bordered(A: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """``s`` of ``[[A, b], [c^T, 0]] [v; s] = [0; 1]``: zero exactly when ``A`` is singular."""
    m = A.shape[0]
    K = np.zeros((m + 1, m + 1))
    K[:m, :m] = A
    K[:m, m] = b
    K[m, :m] = c
    rhs = np.zeros(m + 1)
    rhs[m] = 1.0
    return float(np.linalg.solve(K, rhs)[m])


def _equilibrated_solve(D: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``D^{-1} rhs`` after scaling rows and columns to unit max-norm (least squares when ``D`` is singular)."""
    return _chord_solve(_chord_factor(D), rhs)


def _chord_factor(D: np.ndarray):
    """Row and column scalings to unit max-norm and the LU factors of the scaled ``D``, for repeated
    :func:`_chord_solve`; None factors when ``D`` is exactly singular (then least squares)."""
    R = 1.0 / np.maximum(np.max(np.abs(D), axis=1), 1e-300)
    DR = D * R[:, None]
    C = 1.0 / np.maximum(np.max(np.abs(DR), axis=0), 1e-300)
    A = DR * C[None, :]
    # LAPACK's LU directly (what numpy's solve does): its info flags an exactly singular matrix without the
    # warnings machinery, whose filters are global and not safe in the cycle step's threads
    lu, piv, info = dgetrf(A)
    return R, C, A, ((lu, piv) if info == 0 else None)


def _chord_solve(factor, rhs: np.ndarray) -> np.ndarray:
    R, C, A, lu = factor
    if lu is None:
        try:
            return C * np.linalg.lstsq(A, rhs * R, rcond=None)[0]
        except np.linalg.LinAlgError:   # a matrix with NaN: no step (the iteration rejects it)
            return np.full_like(rhs * R, np.nan)
    x, _ = dgetrs(*lu, rhs * R)
    return C * x


class _MultipleShooting:
    def __init__(self, model, values, free, kind, x0, period, profile=None):
        from bifnet.transverse import floquet

        self.floquet = floquet
        self.model = model
        self.names = list(model.parameter_names)
        self.values = dict(model.resolve_parameters(values))
        self.free = free
        self.kind = kind
        self.rhs = floquet._kernels(model)["rhs"]
        self.n = n = model.n_variables
        a = float(self.values[free])
        if profile is not None:
            X = self._segments_from_profile(profile, float(period), a)
        else:
            _, hs, ys = floquet._integrate(model, self.p(a), np.asarray(x0, dtype=float), float(period), 1e-12,
                                           record=True)
            m = int(max(1, min(SEGMENTS, hs.size // 8)))
            self.m = m
            cuts = np.linspace(0, hs.size, m + 1).round().astype(int)
            unit = hs / hs.sum()
            self.unit = [unit[cuts[k]:cuts[k + 1]] for k in range(m)]
            self.tau = np.array([u.sum() for u in self.unit])
            X = ys[cuts[:-1]]
            self.scale = max(1.0, float(np.max(np.abs(ys[: hs.size + 1]))))
        self.u0 = np.concatenate([X.ravel(), [float(period), a]])
        self.ref = X[0].copy()
        self.fref = self.rhs(self.ref, self.p(a))
        self.border = None

    def _segments_from_profile(self, profile, period: float, a: float) -> np.ndarray:
        """Segment start states taken from an orbit's own profile (normalised times in [0, 1), states), not
        from one integration over the period: an orbit that passes close to a saddle amplifies the error of
        its initial state by 1e6 and more (ngnmm_ping at eps = 30 with periods of 200-300 ms: 1e9-1e11),
        so the states of one long integration leave the orbit and Newton's method does not converge from
        them. The cuts are profile points at equal shares of half time, half arclength (each variable scaled
        by its range), so that neither the slow passages, where perturbations grow, nor the fast spikes,
        where steps are short, fall in one segment; all of the profile's points when it has at most
        :data:`SEGMENTS`. Each segment's fixed mesh is an adaptive run (rtol 1e-12) over it from its start."""
        times, states = (np.asarray(v, dtype=float) for v in profile)
        if states.ndim != 2 or states.shape[1] != self.n or times.shape != (states.shape[0],):
            raise ContinuationError("an orbit profile needs one state of the system per time")
        if times.size == 0 or np.any(np.diff(times) <= 0) or times[-1] - times[0] > 1.0 + 1e-12:
            raise ContinuationError("an orbit profile's times must increase, over at most one period")
        times = times - times[0]   # the orbit starts at the profile's first point
        keep = times < 1.0 - 1e-12   # a last point one period on is the first again
        times, states = times[keep], states[keep]
        if times.size <= SEGMENTS:
            cuts = np.arange(times.size)
        else:
            closed = np.vstack([states, states[:1]])
            span = np.ptp(closed, axis=0)
            span = np.where(span > 0, span, 1.0)
            arc = np.linalg.norm(np.diff(closed, axis=0) / span, axis=1)
            dt = np.diff(np.append(times, 1.0))
            weight = 0.5 * dt + 0.5 * arc / max(float(arc.sum()), 1e-300)
            edges = np.concatenate([[0.0], np.cumsum(weight)])   # weight before point j is edges[j]
            targets = np.arange(SEGMENTS) / SEGMENTS * edges[-1]
            cuts = np.unique(np.searchsorted(edges[:-1], targets, side="left").clip(0, times.size - 1))
        starts = times[cuts]
        durations = np.diff(np.append(starts, 1.0))
        p = self.p(a)
        self.m = len(cuts)
        self.unit, peak = [], 0.0
        for k, c in enumerate(cuts):
            _, hs, ys = self.floquet._integrate(self.model, p, states[c], durations[k] * period, 1e-12, record=True)
            self.unit.append(hs / hs.sum() * durations[k])
            peak = max(peak, float(np.max(np.abs(ys))))
        self.tau = durations.copy()
        self.scale = max(1.0, peak)
        return states[cuts].copy()

    def profile(self, u) -> tuple[np.ndarray, np.ndarray]:
        """``(normalised times, states)`` of the segment starts at ``u``: a profile for a new solve."""
        return np.concatenate([[0.0], np.cumsum(self.tau)[:-1]]), self.states(u).copy()

    def p(self, a):
        values = dict(self.values)
        values[self.free] = float(a)
        return np.array([values[k] for k in self.names], dtype=float)

    def states(self, u):
        return u[: self.m * self.n].reshape(self.m, self.n)

    def segment(self, x, T, a, k):
        M, x_end = self.floquet._monodromies(self.model, self.p(a), x, self.unit[k] * T, np.array([1.0]), "dop853")
        return x_end, M[0]

    def ends(self, u):
        """The segments' end states only (their fixed meshes, no monodromies): for difference quotients."""
        X, T, a = self.states(u), u[-2], u[-1]
        flow = self.floquet._kernels(self.model)["flow_fixed"]
        c, A, b = self.floquet._tableau("dop853")
        p = self.p(a)
        return np.array([flow(X[k], p, np.ascontiguousarray(self.unit[k] * T), c, A, b) for k in range(self.m)])

    def flows(self, u):
        X, T, a = self.states(u), u[-2], u[-1]
        out = [self.segment(X[k], T, a, k) for k in range(self.m)]
        return np.array([e for e, _ in out]), np.array([M for _, M in out])

    def matrix(self, u, ends, Ms):
        """The matrix that is singular at the point (LPC, PD); None for NS."""
        n, m = self.n, self.m
        if self.kind is SpecialKind.NS:
            return None
        size = m * n + (1 if self.kind is SpecialKind.LPC else 0)
        A = np.zeros((size, size))
        eye = np.eye(n)
        for k in range(m):
            r = slice(k * n, (k + 1) * n)
            A[r, r] = Ms[k]
            j = (k + 1) % m
            wrap = j == 0 and self.kind is SpecialKind.PD
            A[r, j * n:(j + 1) * n] += eye if wrap else -eye
        if self.kind is SpecialKind.LPC:
            a = u[-1]
            for k in range(m):
                A[k * n:(k + 1) * n, m * n] = self.tau[k] * self.rhs(ends[k], self.p(a))
            A[m * n, :n] = self.rhs(self.states(u)[0], self.p(a))
        return A

    def condition(self, u, ends, Ms):
        if self.kind is SpecialKind.NS:
            mu = product_eigenvalues(Ms)
            pairs = _torus_pairs(mu, 1e-10)
            if pairs.size == 0:
                raise ContinuationError("no complex multiplier pair for a torus bifurcation")
            gap = np.abs(pairs) ** 2 - 1.0
            return float(gap[np.argmin(np.abs(gap))])
        A = self.matrix(u, ends, Ms)
        if self.border is None:
            U, _, Vt = np.linalg.svd(A)
            self.border = (U[:, -1], Vt[-1])
        return _bordered(A, *self.border)

    def orbit_equations(self, u, ends, Ms, out):
        """The shooting conditions and the phase (the first ``m n + 1`` entries of ``out``)."""
        N = self.m * self.n
        X = self.states(u)
        out[:N] = ((ends - np.roll(X, -1, axis=0)) / self.scale).ravel()
        out[N] = float((X[0] - self.ref) @ self.fref) / max(float(np.linalg.norm(self.fref)), 1e-300)
        return out

    def orbit_jacobian(self, u, ends, Ms, D):
        """Their exact derivatives in the states and the period (rows and columns ``0 .. m n`` of ``D``):
        ``M_k``, ``-I`` and ``tau_k f`` blocks, the phase row."""
        n, m = self.n, self.m
        N = m * n
        p = self.p(u[-1])
        for k in range(m):
            r = slice(k * n, (k + 1) * n)
            D[r, r] = Ms[k] / self.scale
            j = (k + 1) % m
            D[r, j * n:(j + 1) * n] -= np.eye(n) / self.scale
            D[r, N] = self.tau[k] * self.rhs(ends[k], p) / self.scale
        D[N, :n] = self.fref / max(float(np.linalg.norm(self.fref)), 1e-300)
        return D

    def equations(self, u, ends=None, Ms=None):
        if ends is None:
            ends, Ms = self.flows(u)
        out = self.orbit_equations(u, ends, Ms, np.empty(self.m * self.n + 2))
        out[self.m * self.n + 1] = self.condition(u, ends, Ms)
        return out, ends, Ms

    def jacobian(self, u, ends, Ms):
        n, m = self.n, self.m
        N = m * n
        D = self.orbit_jacobian(u, ends, Ms, np.zeros((N + 2, N + 2)))
        T, a = u[-2], u[-1]
        p = self.p(a)
        # the parameter column, and the period column of g: central differences
        for col in (N + 1, N):
            h = 1e-6 * (1.0 + abs(u[col]))
            up, um = u.copy(), u.copy()
            up[col] += h
            um[col] -= h
            Gp, Gm = self.equations(up)[0], self.equations(um)[0]
            if col == N + 1:
                D[:, col] = (Gp - Gm) / (2 * h)
            else:
                D[N + 1, col] = (Gp[N + 1] - Gm[N + 1]) / (2 * h)
        # the row of g in the states: only segment k changes with x_k
        X = self.states(u)
        if self.kind is SpecialKind.NS:
            for k in range(m):
                for i in range(n):
                    h = 1e-6 * (1.0 + abs(X[k, i]))
                    g = []
                    for sign in (1.0, -1.0):
                        x = X[k].copy()
                        x[i] += sign * h
                        Ms2 = Ms.copy()
                        Ms2[k] = self.segment(x, T, a, k)[1]
                        g.append(self.condition(u, ends, Ms2))
                    D[N + 1, k * n + i] = (g[0] - g[1]) / (2 * h)
            return D
        # LPC, PD: g = s of K [v; s] = e, so dg = -w^T dK [v; s] with K^T w = e (dK: only A changes)
        A = self.matrix(u, ends, Ms)
        size = A.shape[0]
        K = np.zeros((size + 1, size + 1))
        K[:size, :size] = A
        K[:size, size] = self.border[0]
        K[size, :size] = self.border[1]
        e = np.zeros(size + 1)
        e[size] = 1.0
        v = np.linalg.solve(K, e)[:size]
        w = np.linalg.solve(K.T, e)[:size]
        lpc = self.kind is SpecialKind.LPC
        for k in range(m):
            r = slice(k * n, (k + 1) * n)
            f_end = self.rhs(ends[k], p) if lpc else None
            f_0 = self.rhs(X[0], p) if lpc and k == 0 else None
            for i in range(n):
                h = 1e-7 * (1.0 + abs(X[k, i]))
                x = X[k].copy()
                x[i] += h
                e_k, M_k = self.segment(x, T, a, k)
                dg = w[r] @ ((M_k - Ms[k]) / h) @ v[r]
                if lpc:
                    dg += (w[r] @ (self.tau[k] * (self.rhs(e_k, p) - f_end) / h)) * v[m * n]
                    if k == 0:
                        dg += w[m * n] * (((self.rhs(x, p) - f_0) / h) @ v[:n])
                D[N + 1, k * n + i] = -dg
        return D

    def final_residual(self, u, G):
        """Max-norm of the equations ``G`` at ``u``, the shooting part with every segment integrated
        again adaptively (rtol 1e-12)."""
        X, T, a = self.states(u), u[-2], u[-1]
        p = self.p(a)
        ends = np.array([self.floquet._integrate(self.model, p, X[k], self.tau[k] * T, 1e-12)[0]
                         for k in range(self.m)])
        shoot = np.max(np.abs((ends - np.roll(X, -1, axis=0)) / self.scale))
        return float(max(shoot, np.max(np.abs(G[self.m * self.n:]))))


def _damped_newton(u, equations, newton_step, max_iterations):
    """Newton's method with a halving line search on the max-norm of ``equations(u) -> (G, ends, Ms)``.

    ``newton_step(u, G, ends, Ms)`` gives the full step; ``u[-2]`` (the period) must stay positive.
    Stops below 1e-12, when no step decreases the residual (converged as far as the arithmetic
    allows) or when the step is negligible. Returns ``(u, G, ends, Ms, residual)``.
    """
    G, ends, Ms = equations(u)
    res = float(np.max(np.abs(G)))
    for _ in range(max_iterations):
        if not np.isfinite(res) or res < 1e-12:
            break
        step = newton_step(u, G, ends, Ms)
        lam, accepted = 1.0, False
        while lam >= 1.0 / 64:
            trial = u + lam * step
            if np.all(np.isfinite(trial)) and trial[-2] > 0:
                Gt, et, Mt = equations(trial)
                rt = float(np.max(np.abs(Gt)))
                if rt < res:
                    u, G, ends, Ms, res, accepted = trial, Gt, et, Mt, rt, True
                    break
            lam /= 2
        if not accepted or np.max(np.abs(lam * step)) < 1e-13 * (1.0 + np.max(np.abs(u))):
            break
    return u, G, ends, Ms, res


@dataclasses.dataclass(frozen=True)
class OrbitSolution:
    """A periodic orbit at fixed parameters, solved by bifnet's multiple shooting."""

    ok: bool
    residual: float
    state: np.ndarray         #: state at time 0
    period: float             #: ms
    multipliers: np.ndarray   #: all of them, largest modulus first (the trivial one included)
    profile: tuple | None = dataclasses.field(default=None, repr=False)   #: segment starts (times in [0, 1), states)

    def unstable_count(self) -> int:
        """Multipliers outside the unit circle (:func:`_count`); -1 when the solve failed."""
        return _count(self.multipliers) if self.ok else -1


def _count(mu: np.ndarray) -> int:
    """Multipliers outside the unit circle, the trivial one (closest to 1) left out; -1 when one lies
    within ``max(1e-6, 10 |mu_trivial - 1|)`` of the circle (undecided: e.g. next to a fold, where the
    trivial multiplier and the fold's split into ``1 +- delta``)."""
    if mu.size == 0:
        return -1
    k = int(np.argmin(np.abs(mu - 1.0)))
    band = max(1e-6, 10.0 * float(abs(mu[k] - 1.0)))
    modulus = np.abs(np.delete(mu, k))
    if np.any(np.abs(modulus - 1.0) <= band):
        return -1
    return int(np.sum(modulus > 1.0))


def solve_periodic_orbit(model, values, x0, period: float, *, max_iterations: int = 10,
                         profile=None) -> OrbitSolution:
    """The periodic orbit through (near) ``x0`` at the parameters ``values``, by multiple shooting.

    The same segments and monodromies as :func:`solve_cycle_point`, with the
    parameters fixed and no multiplier condition: unknowns the segment states
    and the period, equations the shooting conditions and the phase. The
    Jacobian is exact (``M_k``, ``-I``, ``tau_k f``); the multipliers are the
    eigenvalues of the product of the segment monodromies. Independent of the
    engine's mesh: used to decide stability where the engine's multipliers
    disagree with its own trivial multiplier. ``profile`` (normalised times,
    states; the engine's orbit) gives the segments' start states; without it
    they come from one integration from ``x0``, which leaves a strongly
    unstable orbit.
    """
    free = model.parameter_names[0]
    sh = _MultipleShooting(model, values, free, SpecialKind.LPC, x0, period, profile)
    N = sh.m * sh.n
    u = sh.u0.copy()

    def equations(u):
        ends, Ms = sh.flows(u)
        return sh.orbit_equations(u, ends, Ms, np.empty(N + 1)), ends, Ms

    def newton_step(u, G, ends, Ms):  # the parameter (last unknown) stays fixed
        D = sh.orbit_jacobian(u, ends, Ms, np.zeros((N + 1, N + 1)))
        return np.append(_equilibrated_solve(D, -G), 0.0)

    with np.errstate(all="ignore"):
        u, G, ends, Ms, res = _damped_newton(u, equations, newton_step, max_iterations)
        ok = bool(np.isfinite(res))
        mu = np.empty(0, complex)
        if ok:
            res = sh.final_residual(u, np.concatenate([G, [0.0]]))
            mu = product_eigenvalues(Ms)
    ok = ok and res < RESIDUAL_TOLERANCE
    return OrbitSolution(ok=ok, residual=res, state=sh.states(u)[0].copy(), period=float(u[N]), multipliers=mu,
                         profile=sh.profile(u))


def solve_cycle_point(model, values, free: str, kind: SpecialKind, x0, period: float, *,
                      max_iterations: int = 12, profile=None) -> Verification:
    """Newton's method on the multiple-shooting system of an LPC, PD or NS point; see the module docstring.
    ``profile``: as for :func:`solve_periodic_orbit`."""
    sh = _MultipleShooting(model, values, free, kind, x0, period, profile)
    with np.errstate(all="ignore"):
        u, G, ends, Ms, res = _damped_newton(sh.u0.copy(), sh.equations,
                                             lambda u, G, ends, Ms: _equilibrated_solve(sh.jacobian(u, ends, Ms), -G),
                                             max_iterations)
        ok = bool(np.isfinite(res))
        multipliers = np.empty(0, complex)
        if ok:
            try:
                res = sh.final_residual(u, G)  # G, Ms: the equations at the last accepted u
                multipliers = product_eigenvalues(Ms)
            except ContinuationError:
                ok = False
    ok = ok and res < RESIDUAL_TOLERANCE
    X = sh.states(u)
    what = {SpecialKind.LPC: "cyclic block matrix bordered by f and the phase singular",
            SpecialKind.PD: "cyclic block matrix with +I wrap singular (multiplier -1)",
            SpecialKind.NS: "|mu|^2 = 1 for a complex pair"}[kind]
    return Verification(
        ok=ok, residual=res,
        method=f"multiple shooting newton ({sh.m} segments, bifnet DOP853 monodromies): periodic orbit, phase, {what}",
        parameters={free: float(u[-1])}, state=X[0].copy(), eigenvalues=multipliers, period=float(u[-2]),
        reason="" if ok else f"Newton's method on the shooting system did not converge (residual {res:.2g})")


def engine_profile(raw) -> tuple[np.ndarray, np.ndarray] | None:
    """``(normalised times, states)`` of an engine point's orbit, or None where it kept none."""
    orbit = getattr(raw, "periodic_orbit", None)
    times = getattr(orbit, "normalized_time", None)
    if orbit is None or times is None or len(times) < 2:
        return None
    return np.asarray(times, dtype=float), np.asarray(orbit.state, dtype=float)


def verify_cycle_point(branch: Branch, sp: SpecialPoint, system) -> Verification:
    """Verify an LPC, PD or NS point of a homogeneous cycle branch."""
    if system.kind != "homogeneous":
        raise ContinuationError(f"cycle points of the {system.kind} system are not verified by bifnet")
    raw = (branch.engine or {}).get("points", {}).get(sp.index)
    orbit = getattr(raw, "periodic_orbit", None)
    if orbit is None:
        raise ContinuationError(f"the engine kept no orbit for row {sp.index}")
    x0 = np.asarray(orbit.state, dtype=float)[0]
    free = branch.free[0]
    mu = np.asarray(getattr(raw, "floquet_multipliers", None) or (), dtype=complex)
    coarse = float(np.min(np.abs(mu - 1.0))) if mu.size else 0.0
    values = {**branch.parameters, **{f: float(branch[f][sp.index]) for f in branch.free}}
    period = float(branch["period"][sp.index])
    result = solve_cycle_point(system.model, values, free, sp.kind, x0, period, profile=engine_profile(raw))
    if result.ok:
        cand = np.array([result.parameters[free], result.period])
        if not _close_to_branch(branch, sp.index, cand, [free, "period"]):
            result = Verification(
                ok=False, residual=result.residual, method=result.method, parameters={free: values[free]},
                state=x0, eigenvalues=result.eigenvalues, period=period,
                reason=f"Newton's method converged to {free} = {result.parameters[free]:.8g}, "
                       f"period {result.period:.6g}, away from the engine's estimate {values[free]:.8g}")
    if not result.ok and coarse > TRIVIAL_WARNING:
        # the engine's own estimate is doubtful there; say so (bifnet's solve does not depend on its mesh)
        result = dataclasses.replace(result, reason=result.reason + (
            f"; the engine's mesh is too coarse here (|mu_trivial - 1| = {coarse:.2g}): raise ntst"))
    return result


# ---------------------------------------------------------------------------
# following a stretch between two rows in the period

@dataclasses.dataclass(frozen=True)
class ScanSample:
    """One orbit of a period scan: solved at a fixed period with the parameter free."""

    period: float
    parameter: float
    u: np.ndarray = dataclasses.field(repr=False)   #: the shooting unknowns (segment states, period, parameter)
    multipliers: np.ndarray = dataclasses.field(repr=False)
    residual: float = 0.0
    count: int = -1     #: multipliers outside the unit circle, trivial one left out (-1: undecided)
    #: the segment monodromies and end states at ``u``, from which :class:`PeriodScan` builds the chord
    #: Jacobian of the solves that start from this sample (once: kept in ``jacobian``)
    monodromies: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    ends: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    jacobian: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)


def _critical(mu: np.ndarray) -> complex:
    """The non-trivial multiplier closest to the unit circle."""
    rest = np.delete(mu, int(np.argmin(np.abs(mu - 1.0))))
    return complex(rest[int(np.argmin(np.abs(np.abs(rest) - 1.0)))])


def _real(mu: np.ndarray, threshold: float = 1e-6) -> np.ndarray:
    """Which multipliers are real: imaginary part within ``threshold`` of ``max(1, |mu|)``."""
    return np.abs(mu.imag) <= threshold * np.maximum(1.0, np.abs(mu))


def _torus_pairs(mu: np.ndarray, threshold: float = 1e-6) -> np.ndarray:
    """The complex multipliers that can make a torus bifurcation: not the pair the trivial multiplier
    belongs to. At a fold of cycles the trivial multiplier and the fold's are a double 1 (a Jordan block),
    which the arithmetic splits into a complex pair on the unit circle, ``1 +- 0.3i`` at a fold of
    ngnmm_ping at eps = 29.5: a torus bifurcation by its modulus, a fold in truth."""
    complex_ = ~_real(mu, threshold)
    k = int(np.argmin(np.abs(mu - 1.0))) if mu.size else -1
    if k >= 0 and complex_[k]:
        complex_ &= np.abs(mu - np.conj(mu[k])) > 0.0
        complex_[k] = False
    return mu[complex_]


def _condition(mu: np.ndarray, kind: SpecialKind) -> float:
    """PD: ``mu + 1`` of the real negative multiplier closest to -1; NS: ``|mu| - 1`` of the complex pair
    closest to the unit circle, the trivial multiplier's left out (:func:`_torus_pairs`; NaN when there
    is none)."""
    if kind is SpecialKind.PD:
        real = mu[_real(mu) & (mu.real < 0)].real
        return float(real[np.argmin(np.abs(real + 1.0))] + 1.0) if real.size else float("nan")
    pairs = _torus_pairs(mu)
    return float((np.abs(pairs) - 1.0)[np.argmin(np.abs(np.abs(pairs) - 1.0))]) if pairs.size else float("nan")


def _below_minus_one(mu: np.ndarray) -> int:
    """The number of real multipliers below -1. Its parity changes only at a period doubling (a real
    multiplier cannot pass through 0, and a collision of two changes the number by two)."""
    return int(np.sum(_real(mu) & (mu.real < -1.0)))


#: Times a period scan may halve its step where Newton's method fails from the sample before. On
#: ngnmm_ping at eps = 29.5 (rows 250-251, just past a fold) 8 equal steps failed at the first, 32 went
#: through, and a period doubling between the rows was left unlocated.
HALVINGS = 3


class PeriodScan:
    """A cycle branch between two of its rows, followed in the period by multiple shooting.

    Between two rows close together on a branch whose period changes
    monotonically (the snaking branches that approach a homoclinic orbit), the
    branch is a graph over the period even where the parameter turns back and
    forth. :meth:`solve` fixes the period and solves the orbit and the
    parameter: the shooting conditions and phase of :func:`solve_cycle_point`
    with the parameter's column by central differences. :meth:`run` takes
    steps in the period from row a to row b (halved where Newton's method
    fails, :data:`HALVINGS`); :meth:`locate` solves a
    crossing the samples bracket:

    * LPC: the turn of the parameter, bracketed in the period by golden-section
      search to ``1e-10 T`` (the parameter is stationary there, so its error is
      quadratic in that width);
    * PD, NS: a root in the period of ``mu + 1`` (the real negative multiplier)
      or ``|mu| - 1`` (the complex pair) by Brent's method; for PD after a
      bisection on the parity of the real multipliers below -1 until ``mu + 1``
      brackets it.

    The residual is the larger of the orbit's (max-norm, every segment
    integrated again adaptively) and the condition's (``|mu + 1|``,
    ``||mu| - 1|``, or the width of the bracket relative to the period).
    """

    def __init__(self, model, values, free: str, x0, period: float, profile=None):
        self.sh = sh = _MultipleShooting(model, values, free, SpecialKind.LPC, x0, period, profile)
        self.N = sh.m * sh.n

    def _equations(self, u):
        ends, Ms = self.sh.flows(u)
        return self.sh.orbit_equations(u, ends, Ms, np.empty(self.N + 1)), ends, Ms

    def _residual(self, u):
        """The shooting equations and phase at ``u`` from the segments' end states alone (no monodromies)."""
        return self.sh.orbit_equations(u, self.sh.ends(u), None, np.empty(self.N + 1))

    def _jacobian(self, u, ends, Ms):
        """The Jacobian of the shooting equations and phase in the segment states and the parameter (the
        period fixed): the states' columns exact (``M_k``, ``-I``), the parameter's column by central
        differences of the end states; returned as the equilibrated LU factors of :func:`_chord_factor`."""
        N = self.N
        D = self.sh.orbit_jacobian(u, ends, Ms, np.zeros((N + 1, N + 1)))
        h = 1e-7 * (1.0 + abs(u[-1]))
        up, um = u.copy(), u.copy()
        up[-1] += h
        um[-1] -= h
        D[:, N] = (self._residual(up) - self._residual(um)) / (2 * h)
        return _chord_factor(D)

    def _sample_jacobian(self, sample: ScanSample):
        """The LU factors of the Jacobian at ``sample`` (built once, kept in the sample)."""
        if "factor" not in sample.jacobian:
            ends = sample.ends if sample.ends is not None else self.sh.ends(sample.u)
            sample.jacobian["factor"] = self._jacobian(sample.u, ends, sample.monodromies)
        return sample.jacobian["factor"]

    def solve(self, period: float, u_start: np.ndarray, max_iterations: int = 8,
              near: ScanSample | None = None) -> ScanSample | None:
        """The orbit at ``period`` (the parameter free) from ``u_start``, by chord iterations.

        The Jacobian is computed once: the Jacobian at the sample ``near`` (a neighbour's, built once for
        all the solves that start from it; at the start when None), and afresh at the current iterate
        only when an iteration does not reduce the residual tenfold, at most ``max_iterations`` times.
        The iterations integrate the segments' end states alone, without the monodromies (a third of the
        cost). Each iteration takes the full step, or with a fresh Jacobian halves it until the residual
        decreases; the solve stops below 1e-12, when no step decreases the residual, or when the step is
        negligible. The monodromies are then computed at the solution, for its multipliers and the
        residual (at most :data:`RESIDUAL_TOLERANCE`)."""
        N = self.N
        u = u_start.copy()
        u[N] = period
        with np.errstate(all="ignore"):
            if near is None or near.monodromies is None:
                G, ends, Ms = self._equations(u)
                factor, fresh = self._jacobian(u, ends, Ms), True
            else:
                G, factor, fresh = self._residual(u), self._sample_jacobian(near), False
            res = float(np.max(np.abs(G)))
            if not np.isfinite(res):
                return None
            refreshes, iterations = 0, 0
            while res >= 1e-12 and iterations < 4 * max_iterations:
                iterations += 1
                step = np.zeros_like(u)
                s = _chord_solve(factor, -G)
                step[:N], step[-1] = s[:N], s[N]
                lam, accepted = 1.0, False
                while lam >= 1.0 / 64:
                    trial = u + lam * step
                    if np.all(np.isfinite(trial)):
                        Gt = self._residual(trial)
                        rt = float(np.max(np.abs(Gt)))
                        if rt < res:
                            accepted = True
                            break
                    if not fresh:
                        break   # a stale Jacobian: refresh it before shortening the step
                    lam /= 2
                slow = not accepted or rt > 0.1 * res
                if accepted:
                    small = np.max(np.abs(lam * step)) < 1e-13 * (1.0 + np.max(np.abs(u)))
                    u, G, res = trial, Gt, rt
                    if small:
                        break
                if slow:
                    if fresh and not accepted:
                        break   # no step decreases the residual: converged as far as the arithmetic allows
                    if refreshes == max_iterations:
                        break
                    refreshes += 1
                    G, ends, Ms = self._equations(u)
                    factor, fresh = self._jacobian(u, ends, Ms), True
                elif accepted:
                    fresh = False
            G, ends, Ms = self._equations(u)
            res = float(np.max(np.abs(G)))
            if not np.isfinite(res) or res > RESIDUAL_TOLERANCE:
                return None
            mu = product_eigenvalues(Ms)
        return ScanSample(period=float(u[N]), parameter=float(u[-1]), u=u, multipliers=mu,
                          residual=float(res), count=_count(mu), monodromies=Ms, ends=ends)

    def solve_near(self, period: float, samples: Sequence[ScanSample]) -> ScanSample | None:
        """:meth:`solve` at ``period`` from the line through the two samples nearest in the period (secant
        predictor: Newton from the nearest sample alone took 5 iterations and 9 evaluations a solve on the
        eps = 15 snake scans), with the nearest sample's Jacobian for the chord iterations; from the nearest
        sample alone when that fails or there is one sample."""
        near = sorted(samples, key=lambda s: abs(s.period - period))[:2]
        if len(near) == 2 and near[0].period != near[1].period:
            t = (period - near[0].period) / (near[1].period - near[0].period)
            got = self.solve(period, near[0].u + t * (near[1].u - near[0].u), near=near[0])
            if got is not None:
                return got
        return self.solve(period, near[0].u, near=near[0])

    def run(self, period_b: float, parameter_b: float, samples: int = 8,
            halvings: int = HALVINGS, tolerance: float = 1e-8) -> list[ScanSample] | None:
        """Samples from row a (the orbit given) to the period of row b, ``samples`` equal steps in the period,
        a step halved where Newton's method does not converge from the sample before (at most ``halvings``
        times in all); ``None`` when a solve still fails or the last sample does not arrive at row b's
        parameter (the branch is not a graph over the period): within 1e-3 of the rows' distance plus twice
        the engine's Newton tolerance on it, ``tolerance (1 + |parameter_b|)`` (the engine's rows are no
        closer to the branch than that: at eps = 29.5 a scan between rows 6.5e-7 apart arrived 1.0e-8 from
        row b, and a period doubling between them stayed unlocated)."""
        period_a = float(self.sh.u0[self.N])
        first = self.solve(period_a, self.sh.u0)
        if first is None:
            return None
        out = [first]
        width = period_b - period_a
        step, done, left = 1.0 / samples, 0.0, halvings
        while done < 1.0:
            target = min(done + step, 1.0)
            sample = self.solve_near(period_a + width * target if target < 1.0 else period_b, out)
            if sample is None:
                if left == 0:
                    return None
                left -= 1
                step /= 2.0
                continue
            out.append(sample)
            done = target
        a = out[0].parameter
        if abs(out[-1].parameter - parameter_b) > 1e-3 * abs(parameter_b - a) + 2.0 * tolerance * (
                1.0 + abs(parameter_b)):
            return None
        return out

    def locate(self, kind: SpecialKind, scan: Sequence[ScanSample], j: int) -> Verification | None:
        """Solve the crossing of ``kind`` that :func:`crossings_in_scan` put at sample ``j``."""
        from scipy.optimize import brentq

        cache: dict[float, ScanSample] = {}

        def at(T):
            if T not in cache:
                sample = self.solve_near(T, list(scan) + list(cache.values()))
                if sample is None:
                    raise ContinuationError(f"no orbit at period {T:.10g} in the scan")
                cache[T] = sample
            return cache[T]

        try:
            if kind is SpecialKind.LPC:
                lo, hi = scan[max(j - 1, 0)].period, scan[min(j + 1, len(scan) - 1)].period
                sign = 1.0 if scan[j].parameter > scan[max(j - 1, 0)].parameter else -1.0
                golden = (np.sqrt(5.0) - 1.0) / 2.0
                c, d = hi - golden * (hi - lo), lo + golden * (hi - lo)
                while abs(hi - lo) > 1e-10 * abs(scan[j].period):
                    if sign * at(c).parameter > sign * at(d).parameter:
                        hi, d = d, c
                        c = hi - golden * (hi - lo)
                    else:
                        lo, c = c, d
                        d = lo + golden * (hi - lo)
                best = at(0.5 * (lo + hi))
                condition = abs(hi - lo) / abs(best.period)
                what = "the turn of the parameter bracketed in the period by golden-section search"
            else:
                f = lambda T: _condition(at(T).multipliers, kind)
                lo, hi = scan[j].period, scan[j + 1].period
                if kind is SpecialKind.PD:
                    # the parity of the real multipliers below -1 changes between lo and hi; on a snake the
                    # crossing multiplier is often not real at lo (it comes from a complex pair of small
                    # multipliers that meets the real axis on its way out), so f is undefined there or
                    # belongs to another multiplier: bisect on the parity until f brackets the crossing
                    parity = lambda T: _below_minus_one(at(T).multipliers) % 2
                    side = parity(lo)
                    for _ in range(48):
                        if np.isfinite(f(lo)) and np.isfinite(f(hi)) and f(lo) * f(hi) < 0:
                            break
                        mid = 0.5 * (lo + hi)
                        if parity(mid) == side:
                            lo = mid
                        else:
                            hi = mid
                T = brentq(f, lo, hi, xtol=1e-14 * abs(scan[j].period), rtol=4 * np.finfo(float).eps)
                best = at(T)
                condition = abs(_condition(best.multipliers, kind))
                what = ("Brent's root of mu + 1 in the period" if kind is SpecialKind.PD
                        else "Brent's root of |mu| - 1 in the period")
        except (ContinuationError, ValueError, np.linalg.LinAlgError):
            return None
        sh = self.sh
        X = sh.states(best.u)
        residual = max(sh.final_residual(best.u, np.zeros(self.N + 2)), condition)
        method = f"period scan: fixed-period multiple shooting ({sh.m} segments, bifnet DOP853 monodromies), {what}"
        # polish: Newton's method on the full defining system from there (the multipliers of a fixed-period
        # solve carry ~1e-8 of noise where the critical one moves fast with the period)
        values = {**sh.values, sh.free: best.parameter}
        polished = solve_cycle_point(sh.model, values, sh.free, kind, X[0], best.period, profile=sh.profile(best.u))
        if polished.ok and abs(polished.parameters[sh.free] - best.parameter) <= 1e-7 * (1.0 + abs(best.parameter)) \
                and abs(polished.period - best.period) <= 1e-6 * best.period:
            return dataclasses.replace(polished, method=f"{method}, then {polished.method}")
        ok = residual < RESIDUAL_TOLERANCE
        return Verification(
            ok=ok, residual=residual, method=method, parameters={sh.free: best.parameter}, state=X[0].copy(),
            eigenvalues=best.multipliers, period=best.period,
            reason="" if ok else f"the period scan's solve has residual {residual:.2g}")


def crossings_in_scan(scan: Sequence[ScanSample]) -> list[tuple[SpecialKind, int]]:
    """The bifurcations a period scan passes: ``(kind, j)`` with the crossing between samples ``j`` and
    ``j + 1`` (LPC: the parameter turns at sample ``j``, between ``j - 1`` and ``j + 1``; PD: the parity of
    :func:`_below_minus_one` changes; NS: the condition of :func:`_condition` changes sign)."""
    found = []
    p = np.array([s.parameter for s in scan])
    d = np.diff(p)
    for j in range(1, len(d)):
        if d[j - 1] * d[j] < 0:
            found.append((SpecialKind.LPC, j))
    # a real multiplier through -1: the parity of the real multipliers below -1 changes between neighbouring
    # samples; a complex pair through the circle: a sign change of |mu| - 1 (a jump of the multipliers, not
    # a crossing, fails the solve's residual)
    below = np.array([_below_minus_one(s.multipliers) for s in scan])
    found += [(SpecialKind.PD, int(j)) for j in np.flatnonzero((below[:-1] - below[1:]) % 2)]
    g = np.array([_condition(s.multipliers, SpecialKind.NS) for s in scan])
    for j in np.flatnonzero(np.isfinite(g[:-1]) & np.isfinite(g[1:]) & (np.sign(g[:-1]) != np.sign(g[1:]))):
        found.append((SpecialKind.NS, int(j)))
    return sorted(found, key=lambda kj: kj[1])
