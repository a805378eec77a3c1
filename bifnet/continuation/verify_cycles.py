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

import numpy as np

from bifnet.continuation.branch import Branch, SpecialKind, SpecialPoint
from bifnet.continuation.verify import RESIDUAL_TOLERANCE, TRIVIAL_WARNING, Verification, _close_to_branch
from bifnet.errors import ContinuationError

SEGMENTS = 16   #: shooting segments per period (fewer when the adaptive run takes fewer than 8 steps each)


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
    """``D^{-1} rhs`` after scaling rows and columns to unit max-norm."""
    R = 1.0 / np.maximum(np.max(np.abs(D), axis=1), 1e-300)
    DR = D * R[:, None]
    C = 1.0 / np.maximum(np.max(np.abs(DR), axis=0), 1e-300)
    A = DR * C[None, :]
    try:
        return C * np.linalg.solve(A, rhs * R)
    except np.linalg.LinAlgError:
        return C * np.linalg.lstsq(A, rhs * R, rcond=None)[0]


class _MultipleShooting:
    def __init__(self, model, values, free, kind, x0, period):
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
        _, hs, ys = floquet._integrate(model, self.p(a), np.asarray(x0, dtype=float), float(period), 1e-12,
                                       record=True)
        m = int(max(1, min(SEGMENTS, hs.size // 8)))
        self.m = m
        self.cuts = np.linspace(0, hs.size, m + 1).round().astype(int)
        unit = hs / hs.sum()
        self.unit = [unit[self.cuts[k]:self.cuts[k + 1]] for k in range(m)]
        self.tau = np.array([u.sum() for u in self.unit])
        X = ys[self.cuts[:-1]]
        self.scale = max(1.0, float(np.max(np.abs(ys[: hs.size + 1]))))
        self.u0 = np.concatenate([X.ravel(), [float(period), a]])
        self.ref = X[0].copy()
        self.fref = self.rhs(self.ref, self.p(a))
        self.border = None

    def p(self, a):
        values = dict(self.values)
        values[self.free] = float(a)
        return np.array([values[k] for k in self.names], dtype=float)

    def states(self, u):
        return u[: self.m * self.n].reshape(self.m, self.n)

    def segment(self, x, T, a, k):
        M, x_end = self.floquet._monodromies(self.model, self.p(a), x, self.unit[k] * T, np.array([1.0]), "dop853")
        return x_end, M[0]

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
            mu = np.linalg.eigvals(self.product(Ms))
            pairs = mu[np.abs(mu.imag) > 1e-10]
            if pairs.size == 0:
                raise ContinuationError("no complex multiplier pair for a torus bifurcation")
            gap = np.abs(pairs) ** 2 - 1.0
            return float(gap[np.argmin(np.abs(gap))])
        A = self.matrix(u, ends, Ms)
        if self.border is None:
            U, _, Vt = np.linalg.svd(A)
            self.border = (U[:, -1], Vt[-1])
        return _bordered(A, *self.border)

    @staticmethod
    def product(Ms):
        P = np.eye(Ms.shape[1])
        for M in Ms:
            P = M @ P
        return P

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

    def unstable_count(self) -> int:
        """Multipliers outside the unit circle, the trivial one (closest to 1) left out; -1 when one
        lies within ``max(1e-6, 10 |mu_trivial - 1|)`` of the circle (undecided: e.g. next to a fold,
        where the trivial multiplier and the fold's split into ``1 +- delta``)."""
        mu = self.multipliers
        if not self.ok or mu.size == 0:
            return -1
        k = int(np.argmin(np.abs(mu - 1.0)))
        band = max(1e-6, 10.0 * float(abs(mu[k] - 1.0)))
        modulus = np.abs(np.delete(mu, k))
        if np.any(np.abs(modulus - 1.0) <= band):
            return -1
        return int(np.sum(modulus > 1.0))


def solve_periodic_orbit(model, values, x0, period: float, *, max_iterations: int = 10) -> OrbitSolution:
    """The periodic orbit through (near) ``x0`` at the parameters ``values``, by multiple shooting.

    The same segments and monodromies as :func:`solve_cycle_point`, with the
    parameters fixed and no multiplier condition: unknowns the segment states
    and the period, equations the shooting conditions and the phase. The
    Jacobian is exact (``M_k``, ``-I``, ``tau_k f``); the multipliers are the
    eigenvalues of the product of the segment monodromies. Independent of the
    engine's mesh: used to decide stability where the engine's multipliers
    disagree with its own trivial multiplier.
    """
    free = model.parameter_names[0]
    sh = _MultipleShooting(model, values, free, SpecialKind.LPC, x0, period)
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
            mu = np.linalg.eigvals(sh.product(Ms))
            mu = mu[np.argsort(-np.abs(mu), kind="stable")]
    ok = ok and res < RESIDUAL_TOLERANCE
    return OrbitSolution(ok=ok, residual=res, state=sh.states(u)[0].copy(), period=float(u[N]), multipliers=mu)


def solve_cycle_point(model, values, free: str, kind: SpecialKind, x0, period: float, *,
                      max_iterations: int = 12) -> Verification:
    """Newton's method on the multiple-shooting system of an LPC, PD or NS point; see the module docstring."""
    sh = _MultipleShooting(model, values, free, kind, x0, period)
    with np.errstate(all="ignore"):
        u, G, ends, Ms, res = _damped_newton(sh.u0.copy(), sh.equations,
                                             lambda u, G, ends, Ms: _equilibrated_solve(sh.jacobian(u, ends, Ms), -G),
                                             max_iterations)
        ok = bool(np.isfinite(res))
        multipliers = np.empty(0, complex)
        if ok:
            try:
                res = sh.final_residual(u, G)  # G, Ms: the equations at the last accepted u
                mu = np.linalg.eigvals(sh.product(Ms))
                multipliers = mu[np.argsort(-np.abs(mu), kind="stable")]
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
    result = solve_cycle_point(system.model, values, free, sp.kind, x0, period)
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
