"""Verification of LPC, PD and NS points of homogeneous cycles by shooting.

Unknowns ``u = (x0, T, a)`` (``n + 2``): the state at time 0, the period and
the free parameter. Equations:

* ``phi_T(x0; a) - x0 = 0`` (``n``), integrated with bifnet's compiled
  8th-order Dormand–Prince scheme on a mesh chosen by an adaptive run at
  rtol 1e-12 (:mod:`bifnet.transverse.floquet`);
* the phase condition ``(x0 - x_ref) . f(x_ref) = 0``;
* the multiplier condition ``g(u) = 0``, from the monodromy matrix ``M`` of
  the same integration: the bordered determinant of ``[[M - I, f(x0)],
  [f(x0)^T, 0]]`` (LPC: the shooting system is singular), of ``M + I`` (PD:
  a multiplier at -1), or ``|mu|^2 - 1`` of the complex pair closest to the
  unit circle (NS).

Newton's method (a chord method: the finite-difference Jacobian of these
equations is recomputed only when the residual falls by less than 4 per
iteration; the mesh is kept fixed within an iteration, so the equations are
smooth in ``u``). The residual reported is the max-norm of all ``n + 2`` equations
(the shooting part relative to ``max(1, |x0|)``).
"""

from __future__ import annotations

import numpy as np

from bifnet.continuation.branch import Branch, SpecialKind, SpecialPoint
from bifnet.continuation.verify import RESIDUAL_TOLERANCE, TRIVIAL_WARNING, Verification, _close_to_branch
from bifnet.errors import ContinuationError


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


class _Shooting:
    def __init__(self, model, values, free, kind):
        from bifnet.transverse import floquet

        self.floquet = floquet
        self.model = model
        self.names = list(model.parameter_names)
        self.values = dict(model.resolve_parameters(values))
        self.free = free
        self.kind = kind
        self.rhs = floquet._kernels(model)["rhs"]
        self.n = model.n_variables

    def p(self, a):
        values = dict(self.values)
        values[self.free] = float(a)
        return np.array([values[k] for k in self.names], dtype=float)

    def mesh(self, x0, T, a):
        _, hs, _ = self.floquet._integrate(self.model, self.p(a), x0, T, 1e-12)
        return hs / hs.sum()

    def flow(self, x0, T, a, unit_mesh):
        M, x_end = self.floquet._monodromies(self.model, self.p(a), x0, unit_mesh * T, np.array([1.0]), "dop853")
        return x_end, M[0]

    def borders(self, x0, T, a, unit_mesh):
        """Border vectors from the singular vectors of the matrix whose singularity is sought."""
        x_end, M = self.flow(x0, T, a, unit_mesh)
        A = self.matrix(x0, a, x_end, M)
        if A is None:
            return None
        U, _, Vt = np.linalg.svd(A)
        return U[:, -1], Vt[-1]

    def matrix(self, x0, a, x_end, M):
        """The matrix that is singular at the point (LPC, PD), from one flow ``x_end, M``; None for NS."""
        n = self.n
        if self.kind is SpecialKind.PD:
            return M + np.eye(n)
        if self.kind is SpecialKind.LPC:
            f = self.rhs(x0, self.p(a))
            A = np.zeros((n + 1, n + 1))
            A[:n, :n] = M - np.eye(n)
            A[:n, n] = self.rhs(x_end, self.p(a))
            A[n, :n] = f
            return A
        return None

    def equations(self, u, ref, fref, unit_mesh, border):
        n = self.n
        x0, T, a = u[:n], u[n], u[n + 1]
        x_end, M = self.flow(x0, T, a, unit_mesh)
        out = np.empty(n + 2)
        out[:n] = (x_end - x0) / max(1.0, float(np.max(np.abs(x0))))
        out[n] = float((x0 - ref) @ fref) / max(float(np.linalg.norm(fref)), 1e-300)
        if self.kind is SpecialKind.NS:
            mu = np.linalg.eigvals(M)
            pairs = mu[np.abs(mu.imag) > 1e-10]
            if pairs.size == 0:
                raise ContinuationError("no complex multiplier pair for a torus bifurcation")
            gap = np.abs(pairs) ** 2 - 1.0
            out[n + 1] = float(gap[np.argmin(np.abs(gap))])
        else:
            out[n + 1] = _bordered(self.matrix(x0, a, x_end, M), border[0], border[1])
        return out


def solve_cycle_point(model, values, free: str, kind: SpecialKind, x0, period: float, *,
                      max_iterations: int = 12) -> Verification:
    """Newton's method on the shooting system of an LPC, PD or NS point; see the module docstring."""
    sh = _Shooting(model, values, free, kind)
    n = sh.n
    u = np.concatenate([np.asarray(x0, dtype=float), [float(period), float(values[free])]])
    ref = u[:n].copy()
    fref = sh.rhs(ref, sh.p(u[n + 1]))
    res = np.inf
    border = None
    D = None
    best, worse = np.inf, 0
    with np.errstate(all="ignore"):
        for _ in range(max_iterations):
            mesh = sh.mesh(u[:n], u[n], u[n + 1])
            if border is None and kind is not SpecialKind.NS:
                border = sh.borders(u[:n], u[n], u[n + 1], mesh)
            G = sh.equations(u, ref, fref, mesh, border)
            previous, res = res, float(np.max(np.abs(G)))
            if not np.isfinite(res):
                break
            if res < 1e-11:
                break
            best = min(best, res)
            worse = worse + 1 if res > best else 0
            if worse >= 2:
                break  # diverging: give up rather than wander
            if D is None or res > 0.25 * previous:
                # chord method: a new finite-difference Jacobian only when convergence is slow
                D = np.empty((n + 2, n + 2))
                for j in range(n + 2):
                    h = 1e-7 * (1.0 + abs(u[j]))
                    up = u.copy()
                    up[j] += h
                    D[:, j] = (sh.equations(up, ref, fref, mesh, border) - G) / h
            try:
                step = np.linalg.solve(D, -G)
            except np.linalg.LinAlgError:
                step = np.linalg.lstsq(D, -G, rcond=None)[0]
            u = u + step
            if not (np.all(np.isfinite(u)) and u[n] > 0):
                res = np.inf
                break
            if np.max(np.abs(step)) < 1e-13 * (1.0 + np.max(np.abs(u))):
                mesh = sh.mesh(u[:n], u[n], u[n + 1])
                res = float(np.max(np.abs(sh.equations(u, ref, fref, mesh, border))))
                break
    ok = res < RESIDUAL_TOLERANCE
    multipliers = np.empty(0, complex)
    if np.all(np.isfinite(u)) and u[n] > 0:
        try:
            mesh = sh.mesh(u[:n], u[n], u[n + 1])
            _, M = sh.flow(u[:n], u[n], u[n + 1], mesh)
            mu = np.linalg.eigvals(M)
            multipliers = mu[np.argsort(-np.abs(mu), kind="stable")]
        except ContinuationError:
            ok = False
    what = {SpecialKind.LPC: "[[M - I, f], [f^T, 0]] singular", SpecialKind.PD: "M + I singular",
            SpecialKind.NS: "|mu|^2 = 1 for a complex pair"}[kind]
    return Verification(
        ok=ok, residual=res, method=f"shooting newton (bifnet DOP853 monodromy): phi_T(x0) = x0, phase, {what}",
        parameters={free: float(u[n + 1])}, state=u[:n].copy(), eigenvalues=multipliers, period=float(u[n]),
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
    if mu.size and float(np.min(np.abs(mu - 1.0))) > TRIVIAL_WARNING:
        return Verification(
            ok=False, residual=float("nan"), method="shooting newton: not attempted", parameters={free: float(
                branch[free][sp.index])}, state=x0, eigenvalues=mu, period=float(branch["period"][sp.index]),
            reason=f"the engine's mesh is too coarse here (|mu_trivial - 1| = {np.min(np.abs(mu - 1.0)):.2g}): "
                   "the point is not trusted; raise ntst")
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
    return result
