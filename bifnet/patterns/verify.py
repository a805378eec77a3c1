"""Verification of the special points of full-network pattern branches.

Each LP, HB or BP point detected on a stationary pattern branch (a change of
the unstable count of the dense network Jacobian between rows, or a turning
point of the parameter) is solved again by Newton's method on its defining
system in the full ``N n``-dimensional state:

* **LP** (fold): ``F = 0``, ``D_X F v = 0``, ``c . v = 1`` in ``(X, p, v)``;
* **HB** (Hopf): ``F = 0``, ``D_X F v_r + w v_i = 0``, ``D_X F v_i - w v_r = 0``,
  ``c . v_r = 1``, ``c . v_i = 0`` in ``(X, p, w, v_r, v_i)``;
* **BP** (branch point, e.g. where a symmetric branch meets another): Moore's
  system ``F + beta psi = 0``, ``D_X F^T psi = 0``, ``D_p F . psi = 0``,
  ``c . psi = 1`` in ``(X, p, beta, psi)``, regular at a simple branch point
  (``beta = 0`` there);
* **ZH** (zero-Hopf, on two-parameter loci): the Hopf system with both parameters
  free plus ``D_X F v_0 = 0``, ``c_0 . v_0 = 1``.

``D_X F`` is the exact dense network Jacobian
(:func:`bifnet.network.core.network_jacobian_dense`), and the second derivatives
``D_X (D_X F v)`` and ``psi^T D_X^2 F`` are exact too: the nonlinearity is
node-local in the extended variables ``xi_i = (x_i, s_k (G X_{c_k})_i)``, which
are linear in ``X``, so they are the node's sympy Hessians contracted with that
linear map. The parameter derivative ``D_p F`` is exact as well (sympy); the
derivatives of ``D_X F`` in the parameters, which enter only Newton's
matrices, are central differences. A point passes when Newton's method converges (max-norm
residual below :data:`RESIDUAL_TOLERANCE`) to a point next to the rows where it
was detected (and, for HB, to the pair it started from); otherwise it keeps
``located = False`` with the reason. A verified Hopf point gets the first Lyapunov
coefficient ``l1`` of the full network and its criticality. See ``docs/engine.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Mapping

import numpy as np

from bifnet.continuation.branch import SpecialKind, SpecialPoint
from bifnet.continuation.verify import damped_newton
from bifnet.errors import BifnetError

log = logging.getLogger("bifnet.patterns")

#: Largest max-norm residual of a defining system that counts as solved.
RESIDUAL_TOLERANCE = 1e-9

FOLD_METHOD = ("newton (full network): F = 0, DX v = 0, c.v = 1 (exact DX, D2X and DpF)")
HOPF_METHOD = ("newton (full network): F = 0, DX v = i w v, c.v = 1 (exact DX, D2X and DpF)")
BP_METHOD = ("newton (full network, Moore's system): F + beta psi = 0, DX^T psi = 0, Dp F.psi = 0, "
             "c.psi = 1 (exact DX, D2X and DpF)")


class NetworkDerivatives:
    """The network field ``F(X; values)`` with exact first and second derivatives in ``X``.

    ``values`` is a mapping of (some) model parameters overriding ``parameters``;
    networks are cached per set of values.
    """

    def __init__(self, model, operator, parameters: Mapping[str, float]):
        from bifnet.continuation.verify import derivative_tensors
        from bifnet.network import build_network

        model.require_coupling("a pattern verification")
        self.model = model
        self.parameters = dict(model.resolve_parameters(dict(parameters)))
        self.base = build_network(model, operator, self.parameters)
        self.shape = self.base.state_shape
        self._nets = {}
        self._dp = {}
        self._hessian, self._third = derivative_tensors(tuple(model.equations), model.state_symbols + model.input_symbols,
                                              model.parameter_symbols)

    @property
    def dimension(self) -> int:
        return self.shape[0] * self.shape[1]

    def network(self, values: Mapping[str, float]):
        key = tuple(sorted((k, float(v)) for k, v in values.items()))
        net = self._nets.get(key)
        if net is None:
            if len(self._nets) > 16:
                self._nets.clear()
            net = self._nets[key] = self.base.with_parameters(**{k: float(v) for k, v in values.items()})
        return net

    def F(self, X, values):
        from bifnet.network.core import network_rhs

        return network_rhs(self.network(values), np.asarray(X, dtype=float))

    def J(self, X, values):
        from bifnet.network.core import network_jacobian_dense

        return network_jacobian_dense(self.network(values), np.asarray(X, dtype=float))

    def _step(self, values, name):
        return 1e-6 * max(1.0, abs(float(values[name])))

    def _parameter_functions(self, name):
        """Lambdified ``df/d name`` and ``df/dC`` of the node (in ``xi``) and ``d s_k / d name``."""
        cached = self._dp.get(name)
        if cached is None:
            import sympy

            model = self.model
            sym = sympy.Symbol(name, real=True)
            xi = list(model.state_symbols + model.input_symbols)
            pars = list(model.parameter_symbols)
            fp = sympy.lambdify([xi, pars], [sympy.diff(e, sym) for e in model.equations], modules="numpy")
            fC = sympy.lambdify([xi, pars], [[sympy.diff(e, c) for c in model.input_symbols]
                                             for e in model.equations], modules="numpy")
            ds = sympy.lambdify([pars], [sympy.diff(e, sym) for e in model.strength_expressions], modules="numpy")
            cached = self._dp[name] = (fp, fC, ds)
        return cached

    def dF(self, X, values, name):
        """``d F / d name``, exact: ``f_p(xi_i) + sum_k f_{C_k}(xi_i) (d s_k / d name) (G X_{c_k})_i``."""
        fp, fC, ds = self._parameter_functions(name)
        net = self.network(values)
        N, n = self.shape
        X = np.asarray(X, dtype=float).reshape(N, n)
        idx = list(self.model.coupled_indices)
        strengths = np.asarray(self.model.strengths(net.parameters), dtype=float)
        G = np.asarray(net.weights, dtype=float)
        GX = G @ X[:, idx]                                   # (N, m)
        xi = np.hstack([X, strengths[None, :] * GX])
        p = np.asarray(net.parameter_vector, dtype=float)
        dstr = np.asarray(ds(p), dtype=float).reshape(-1)
        out = np.empty((N, n))
        for i in range(N):
            fpi = np.broadcast_to(np.asarray(fp(xi[i], p), dtype=float), (n,))
            fCi = np.broadcast_to(np.asarray(fC(xi[i], p), dtype=float), (n, len(idx)))
            out[i] = fpi + fCi @ (dstr * GX[i])
        return out.ravel()

    def dJ(self, X, values, name):
        """``d (D_X F) / d name`` (central difference of the exact Jacobian)."""
        h = self._step(values, name)
        up, down = {**values, name: values[name] + h}, {**values, name: values[name] - h}
        return (self.J(X, up) - self.J(X, down)) / (2 * h)

    def d2F(self, X, values, name):
        """``d^2 F / d name^2`` (central second difference)."""
        h = 1e-4 * max(1.0, abs(float(values[name])))
        up, down = {**values, name: values[name] + h}, {**values, name: values[name] - h}
        return (self.F(X, up) - 2 * self.F(X, values) + self.F(X, down)) / h ** 2

    def _node_hessians(self, X, values):
        """``(H, S)``: node Hessians ``(N, n, n + m, n + m)`` in ``xi`` and the linear map ``S``
        ``(N, n + m, N n)`` with ``xi_i = S_i X``."""
        net = self.network(values)
        N, n = self.shape
        model = self.model
        idx = list(model.coupled_indices)
        m = len(idx)
        strengths = np.asarray(model.strengths(net.parameters), dtype=float)
        G = np.asarray(net.weights, dtype=float)
        S = np.zeros((N, n + m, N * n))
        for i in range(N):
            S[i, np.arange(n), i * n + np.arange(n)] = 1.0
            for k, c in enumerate(idx):
                S[i, n + k, c::n] = strengths[k] * G[i]
        xi = np.einsum("iaj,j->ia", S, np.asarray(X, dtype=float).ravel())
        p = np.asarray(net.parameter_vector, dtype=float)
        H = np.stack([self._hessian(xi[i], p) for i in range(N)])
        return H, S

    def multilinear(self, X, values, *directions):
        """``D_X^2 F [u, v]`` (two directions) or ``D_X^3 F [u, v, w]`` (three), exact; complex directions allowed."""
        H, S = self._node_hessians(X, values)
        etas = [np.einsum("iaj,j->ia", S, np.asarray(u)) for u in directions]
        if len(etas) == 2:
            return np.einsum("iabc,ib,ic->ia", H, *etas).ravel()
        net = self.network(values)
        xi = np.einsum("iaj,j->ia", S, np.asarray(X, dtype=float).ravel())
        p = np.asarray(net.parameter_vector, dtype=float)
        T = np.stack([self._third(xi[i], p) for i in range(self.shape[0])])
        return np.einsum("iabcd,ib,ic,id->ia", T, *etas).ravel()

    def D2v(self, X, values, v):
        """``D_X (D_X F(X) v)``: the exact ``(N n) x (N n)`` derivative of the Jacobian along ``v``."""
        H, S = self._node_hessians(X, values)
        eta = np.einsum("iaj,j->ia", S, np.asarray(v, dtype=float))
        Hv = np.einsum("iabc,ic->iab", H, eta)
        return np.einsum("iab,ibj->iaj", Hv, S).reshape(self.dimension, self.dimension)

    def psi_D2(self, X, values, psi):
        """``sum_r psi_r D_X^2 F_r``: the exact derivative of ``D_X F^T psi`` in ``X`` (symmetric)."""
        H, S = self._node_hessians(X, values)
        N, n = self.shape
        h = np.einsum("ia,iabc->ibc", np.asarray(psi, dtype=float).reshape(N, n), H)
        T = np.einsum("ibc,icl->ibl", h, S)
        return S.reshape(-1, self.dimension).T @ T.reshape(-1, self.dimension)


@dataclasses.dataclass(frozen=True)
class PatternVerification:
    """Outcome of solving a pattern point's defining system.

    ``X`` the full state (flat), ``value`` the free parameter, ``vector`` the
    critical eigenvector (``v``; Hopf: ``v_r + i v_i``; BP: the adjoint ``psi``),
    ``omega`` (rad/ms, Hopf), ``eigenvalues`` of the dense Jacobian there.
    """

    ok: bool
    residual: float
    method: str
    value: float
    X: np.ndarray
    vector: np.ndarray
    omega: float = float("nan")
    eigenvalues: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, complex))
    reason: str = ""


def newton(G, DG, z, *, max_iterations=30, tolerance=RESIDUAL_TOLERANCE):
    """Damped Newton's method on a square system (that of the homogeneous points, a singular
    matrix ending the iteration); returns ``(z, residual, converged)``."""
    return damped_newton(G, DG, z, max_iterations=max_iterations, tolerance=tolerance, lstsq_fallback=False)


# ---------------------------------------------------------------------------
# defining systems (unknowns and equations in one place, reused by the loci)

def fold_system(D: NetworkDerivatives, values: Mapping[str, float], names, c):
    """``G(z)``, ``DG(z)`` of the fold system in ``z = (X, v, *names)`` (``len(names)`` parameters free);
    ``DG`` has ``len(names) - 1`` more columns than rows."""
    d = D.dimension
    names = list(names)

    def unpack(z):
        vals = {**values, **{nm: float(z[2 * d + k]) for k, nm in enumerate(names)}}
        return z[:d], z[d:2 * d], vals

    def G(z):
        X, v, vals = unpack(z)
        return np.concatenate([D.F(X, vals), D.J(X, vals) @ v, [c @ v - 1.0]])

    def DG(z):
        X, v, vals = unpack(z)
        J = D.J(X, vals)
        M = np.zeros((2 * d + 1, 2 * d + len(names)))
        M[:d, :d] = J
        M[d:2 * d, :d] = D.D2v(X, vals, v)
        M[d:2 * d, d:2 * d] = J
        M[2 * d, d:2 * d] = c
        for k, nm in enumerate(names):
            M[:d, 2 * d + k] = D.dF(X, vals, nm)
            M[d:2 * d, 2 * d + k] = D.dJ(X, vals, nm) @ v
        return M

    return G, DG


def hopf_system(D: NetworkDerivatives, values: Mapping[str, float], names, c):
    """``G``, ``DG`` of the Hopf system in ``z = (X, v_r, v_i, omega, *names)``."""
    d = D.dimension
    names = list(names)
    base = 3 * d + 1

    def unpack(z):
        vals = {**values, **{nm: float(z[base + k]) for k, nm in enumerate(names)}}
        return z[:d], z[d:2 * d], z[2 * d:3 * d], float(z[3 * d]), vals

    def G(z):
        X, vr, vi, w, vals = unpack(z)
        J = D.J(X, vals)
        return np.concatenate([D.F(X, vals), J @ vr + w * vi, J @ vi - w * vr, [c @ vr - 1.0, c @ vi]])

    def DG(z):
        X, vr, vi, w, vals = unpack(z)
        J = D.J(X, vals)
        eye = np.eye(d)
        M = np.zeros((3 * d + 2, base + len(names)))
        M[:d, :d] = J
        M[d:2 * d, :d] = D.D2v(X, vals, vr)
        M[d:2 * d, d:2 * d] = J
        M[d:2 * d, 2 * d:3 * d] = w * eye
        M[d:2 * d, 3 * d] = vi
        M[2 * d:3 * d, :d] = D.D2v(X, vals, vi)
        M[2 * d:3 * d, d:2 * d] = -w * eye
        M[2 * d:3 * d, 2 * d:3 * d] = J
        M[2 * d:3 * d, 3 * d] = -vr
        M[3 * d, d:2 * d] = c
        M[3 * d + 1, 2 * d:3 * d] = c
        for k, nm in enumerate(names):
            dJ = D.dJ(X, vals, nm)
            M[:d, base + k] = D.dF(X, vals, nm)
            M[d:2 * d, base + k] = dJ @ vr
            M[2 * d:3 * d, base + k] = dJ @ vi
        return M

    return G, DG


def _branch_point_system(D: NetworkDerivatives, values, name, c):
    """Moore's system in ``z = (X, psi, beta, p)``."""
    d = D.dimension

    def unpack(z):
        return z[:d], z[d:2 * d], float(z[2 * d]), {**values, name: float(z[2 * d + 1])}

    def G(z):
        X, psi, beta, vals = unpack(z)
        return np.concatenate([D.F(X, vals) + beta * psi, D.J(X, vals).T @ psi, [D.dF(X, vals, name) @ psi],
                               [c @ psi - 1.0]])

    def DG(z):
        X, psi, beta, vals = unpack(z)
        J = D.J(X, vals)
        Fp = D.dF(X, vals, name)
        Jp_psi = D.dJ(X, vals, name).T @ psi
        M = np.zeros((2 * d + 2, 2 * d + 2))
        M[:d, :d], M[:d, d:2 * d], M[:d, 2 * d], M[:d, 2 * d + 1] = J, beta * np.eye(d), psi, Fp
        M[d:2 * d, :d], M[d:2 * d, d:2 * d], M[d:2 * d, 2 * d + 1] = D.psi_D2(X, vals, psi), J.T, Jp_psi
        M[2 * d, :d], M[2 * d, d:2 * d], M[2 * d, 2 * d + 1] = Jp_psi, Fp, D.d2F(X, vals, name) @ psi
        M[2 * d + 1, d:2 * d] = c
        return M

    return G, DG


def zero_hopf_system(D: NetworkDerivatives, names, c_h, c_0):
    """``G``, ``DG`` of the zero-Hopf system in ``z = (X, v_r, v_i, omega, v_0, p1, p2)`` (square, ``4 d + 3``):
    the Hopf system with both parameters free and ``D_X F v_0 = 0``, ``c_0 . v_0 = 1``."""
    d = D.dimension
    p1, p2 = names

    def unpack(z):
        vals = {p1: float(z[4 * d + 1]), p2: float(z[4 * d + 2])}
        return z[:d], z[d:2 * d], z[2 * d:3 * d], float(z[3 * d]), z[3 * d + 1:4 * d + 1], vals

    def G(z):
        X, vr, vi, w, v0, vals = unpack(z)
        J = D.J(X, vals)
        return np.concatenate([D.F(X, vals), J @ vr + w * vi, J @ vi - w * vr, [c_h @ vr - 1.0, c_h @ vi],
                               J @ v0, [c_0 @ v0 - 1.0]])

    def DG(z):
        X, vr, vi, w, v0, vals = unpack(z)
        J = D.J(X, vals)
        eye = np.eye(d)
        M = np.zeros((4 * d + 3, 4 * d + 3))
        M[:d, :d] = J
        M[d:2 * d, :d], M[d:2 * d, d:2 * d], M[d:2 * d, 2 * d:3 * d] = D.D2v(X, vals, vr), J, w * eye
        M[d:2 * d, 3 * d] = vi
        M[2 * d:3 * d, :d], M[2 * d:3 * d, d:2 * d], M[2 * d:3 * d, 2 * d:3 * d] = D.D2v(X, vals, vi), -w * eye, J
        M[2 * d:3 * d, 3 * d] = -vr
        M[3 * d, d:2 * d] = c_h
        M[3 * d + 1, 2 * d:3 * d] = c_h
        r0 = 3 * d + 2
        M[r0:r0 + d, :d], M[r0:r0 + d, 3 * d + 1:4 * d + 1] = D.D2v(X, vals, v0), J
        M[r0 + d, 3 * d + 1:4 * d + 1] = c_0
        for k, nm in enumerate(names):
            dJ = D.dJ(X, vals, nm)
            col = 4 * d + 1 + k
            M[:d, col] = D.dF(X, vals, nm)
            M[d:2 * d, col] = dJ @ vr
            M[2 * d:3 * d, col] = dJ @ vi
            M[r0:r0 + d, col] = dJ @ v0
        return M

    return G, DG


ZERO_HOPF_METHOD = ("newton (full network): F = 0, DX v = i w v, DX v0 = 0, c.v = 1, c0.v0 = 1 in two parameters "
                    "(exact DX, D2X and DpF)")


def solve_pattern_zero_hopf(D: NetworkDerivatives, X, values: Mapping[str, float], names) -> dict:
    """Newton's method on the zero-Hopf system from a guess (the real eigenvalue and the complex pair
    nearest the imaginary axis). Returns ``ok``, ``residual``, ``method``, ``values`` (both parameters),
    ``X``, ``omega``, ``eigenvalues``, ``reason``."""
    X = np.asarray(X, dtype=float).ravel()
    d = X.size
    J = D.J(X, values)
    w, V = np.linalg.eig(J)
    scale = max(1.0, float(np.max(np.abs(w))))
    real = np.flatnonzero(np.abs(w.imag) <= 1e-10 * scale)
    pairs = np.flatnonzero(w.imag > 1e-10 * scale)
    fail = {"ok": False, "residual": math.inf, "method": ZERO_HOPF_METHOD, "values": dict(values), "X": X,
            "omega": math.nan, "eigenvalues": w}
    if not real.size or not pairs.size:
        return {**fail, "reason": "no real eigenvalue and complex pair at the detected point"}
    k0 = int(real[np.argmin(np.abs(w[real]))])
    kh = int(pairs[np.argmin(np.abs(w[pairs].real))])
    v0 = np.real(V[:, k0])
    v0 = v0 / np.linalg.norm(v0)
    vh = V[:, kh]
    c_h = np.real(vh) / float(np.real(vh) @ np.real(vh))
    vh = vh / complex(c_h @ vh)
    G, DG = zero_hopf_system(D, tuple(names), c_h, v0.copy())
    z0 = np.concatenate([X, vh.real, vh.imag, [w[kh].imag], v0, [values[names[0]], values[names[1]]]])
    z, res, ok = newton(G, DG, z0)
    omega = float(z[3 * d])
    reason = "" if ok else f"Newton's method on the zero-Hopf system did not converge (residual {res:.2g})"
    if ok and not abs(omega) > 1e-8:
        ok, reason = False, "Newton's method converged to omega = 0 (a Bogdanov-Takens point?), not a zero-Hopf point"
    vals = {names[0]: float(z[4 * d + 1]), names[1]: float(z[4 * d + 2])}
    ev = np.linalg.eigvals(D.J(z[:d], vals)) if np.all(np.isfinite(z)) else np.empty(0, complex)
    return {"ok": ok, "residual": res, "method": ZERO_HOPF_METHOD, "values": vals, "X": z[:d].copy(),
            "omega": abs(omega), "eigenvalues": ev, "reason": reason}


# ---------------------------------------------------------------------------
# solvers from a guess

def _real_null_guess(J):
    w, V = np.linalg.eig(J)
    k = int(np.argmin(np.abs(w)))
    v = np.real(V[:, k])
    if not np.any(v):
        v = np.imag(V[:, k])
    return v / np.linalg.norm(v), w[k]


def solve_pattern_fold(D: NetworkDerivatives, X, values: Mapping[str, float], free: str) -> PatternVerification:
    """Newton's method on the fold system of the full network from the guess ``(X, values[free])``."""
    X = np.asarray(X, dtype=float).ravel()
    d = X.size
    v, _ = _real_null_guess(D.J(X, values))
    c = v.copy()
    G, DG = fold_system(D, values, [free], c)
    z, res, ok = newton(G, DG, np.concatenate([X, v, [values[free]]]))
    vals = {**values, free: float(z[2 * d])}
    ev = np.linalg.eigvals(D.J(z[:d], vals)) if np.all(np.isfinite(z)) else np.empty(0, complex)
    return PatternVerification(ok=ok, residual=res, method=FOLD_METHOD, value=float(z[2 * d]), X=z[:d].copy(),
                               vector=z[d:2 * d].copy(), eigenvalues=ev,
                               reason="" if ok else f"Newton's method on the fold system did not converge "
                                                    f"(residual {res:.2g})")


def solve_pattern_hopf(D: NetworkDerivatives, X, values: Mapping[str, float], free: str, omega: float | None = None
                       ) -> PatternVerification:
    """Newton's method on the Hopf system of the full network from the guess ``(X, values[free])``,
    starting from the complex pair nearest the imaginary axis (nearest ``i omega`` when the crossing's
    frequency is known: two pairs can cross between the same rows)."""
    X = np.asarray(X, dtype=float).ravel()
    d = X.size
    J = D.J(X, values)
    w, V = np.linalg.eig(J)
    scale = max(1.0, float(np.max(np.abs(w))))
    pairs = np.flatnonzero(w.imag > 1e-10 * scale)
    if pairs.size == 0:
        return PatternVerification(ok=False, residual=math.inf, method=HOPF_METHOD, value=float(values[free]), X=X,
                                   vector=np.empty(0), eigenvalues=w,
                                   reason="no complex eigenvalue pair at the detected point")
    k = int(pairs[np.argmin(np.abs(w[pairs].real) if omega is None else np.abs(w[pairs] - 1j * omega))])
    v = V[:, k]
    c = np.real(v) / float(np.real(v) @ np.real(v))
    v = v / complex(c @ v)
    G, DG = hopf_system(D, values, [free], c)
    z, res, ok = newton(G, DG, np.concatenate([X, v.real, v.imag, [w[k].imag, values[free]]]))
    omega = float(z[3 * d])
    reason = ""
    if ok and abs(abs(omega) - w[k].imag) > 1e-2 * w[k].imag:
        ok, reason = False, (f"Newton's method converged to another imaginary pair (omega {abs(omega):.6g} "
                             f"instead of {w[k].imag:.6g})")
    elif ok and not abs(omega) > 1e-8:
        ok, reason = False, "Newton's method converged to a zero eigenvalue, not an imaginary pair"
    elif not ok:
        reason = f"Newton's method on the Hopf system did not converge (residual {res:.2g})"
    vals = {**values, free: float(z[3 * d + 1])}
    ev = np.linalg.eigvals(D.J(z[:d], vals)) if np.all(np.isfinite(z)) else np.empty(0, complex)
    return PatternVerification(ok=ok, residual=res, method=HOPF_METHOD, value=float(z[3 * d + 1]), X=z[:d].copy(),
                               vector=z[d:2 * d] + 1j * z[2 * d:3 * d], omega=abs(omega), eigenvalues=ev,
                               reason=reason)


def solve_pattern_branch_point(D: NetworkDerivatives, X, values: Mapping[str, float], free: str
                               ) -> PatternVerification:
    """Newton's method on Moore's branch-point system of the full network from a guess."""
    X = np.asarray(X, dtype=float).ravel()
    d = X.size
    psi, _ = _real_null_guess(D.J(X, values).T)
    c = psi.copy()
    G, DG = _branch_point_system(D, values, free, c)
    z, res, ok = newton(G, DG, np.concatenate([X, psi, [0.0, values[free]]]))
    reason = "" if ok else f"Newton's method on Moore's branch-point system did not converge (residual {res:.2g})"
    beta = float(z[2 * d])
    if ok and abs(beta) > 1e-8:
        ok, reason = False, f"Moore's system converged with beta = {beta:.3g} != 0"
    vals = {**values, free: float(z[2 * d + 1])}
    ev = np.linalg.eigvals(D.J(z[:d], vals)) if np.all(np.isfinite(z)) else np.empty(0, complex)
    return PatternVerification(ok=ok, residual=res, method=BP_METHOD, value=float(z[2 * d + 1]), X=z[:d].copy(),
                               vector=z[d:2 * d].copy(), eigenvalues=ev, reason=reason)


def pattern_lyapunov_coefficient(D: NetworkDerivatives, X, values: Mapping[str, float], omega: float) -> float:
    """First Lyapunov coefficient ``l1`` of the full network at a Hopf point ``(X, values)`` with pair ``+-i omega``.

    Kuznetsov, *Elements of Applied Bifurcation Theory*, eq. (3.20), in ``R^(N n)`` with the exact second and
    third derivatives of the network field (:meth:`NetworkDerivatives.multilinear`):
    ``l1 = Re(<p, C(q,q,qb)> - 2 <p, B(q, A^-1 B(q,qb))> + <p, B(qb, (2iw - A)^-1 B(q,q))>) / (2 w)``,
    ``A q = i w q``, ``A^T p = -i w p``, ``<q, q> = <p, q> = 1``. Negative: supercritical.
    """
    X = np.asarray(X, dtype=float).ravel()
    A = D.J(X, values)
    w, V = np.linalg.eig(A)
    k = int(np.argmin(np.abs(w - 1j * omega)))
    omega = float(w[k].imag)
    q = V[:, k] / np.linalg.norm(V[:, k])
    wl, U = np.linalg.eig(A.T)
    p = U[:, int(np.argmin(np.abs(wl + 1j * omega)))]
    p = p / np.conj(np.vdot(p, q))
    qb = np.conj(q)
    eye = np.eye(A.shape[0])
    B = lambda u, v: D.multilinear(X, values, u, v)  # noqa: E731
    term = (np.vdot(p, D.multilinear(X, values, q, q, qb))
            - 2 * np.vdot(p, B(q, np.linalg.solve(A, B(q, qb))))
            + np.vdot(p, B(qb, np.linalg.solve(2j * omega * eye - A, B(q, q)))))
    return float(term.real / (2 * omega))


_SOLVERS = {SpecialKind.LP: solve_pattern_fold, SpecialKind.HB: solve_pattern_hopf,
            SpecialKind.BP: solve_pattern_branch_point}


def _next_to_rows(points: np.ndarray, index: int, z: np.ndarray) -> bool:
    """Is ``z = (X, p)`` within 1.5 steps of rows ``index - 1 .. index + 2`` of ``points``?"""
    lo, hi = max(index - 1, 0), min(index + 2, len(points) - 1)
    rows = points[lo:hi + 1]
    reach = max(float(np.max(np.linalg.norm(np.diff(rows, axis=0), axis=1))) if len(rows) > 1 else 0.0, 1e-6)
    return float(np.min(np.linalg.norm(rows - z, axis=1))) <= 1.5 * reach


def _equilibrium_between(D: NetworkDerivatives, a, b, w: float, X0, free: str):
    """``(p, X, eigenvalues)``: the network equilibrium at ``p = a_p + w (b_p - a_p)`` by Newton's method from
    ``X0``, or None."""
    p = float(a[-1] + w * (b[-1] - a[-1]))
    values = {free: p}
    X = np.array(X0, dtype=float)
    for _ in range(12):
        r = D.F(X, values)
        if not np.all(np.isfinite(r)):
            return None
        if np.max(np.abs(r)) < 1e-11:
            return p, X, np.linalg.eigvals(D.J(X, values))
        X = X - np.linalg.solve(D.J(X, values), r)
    return None


def _hopf_guess(D: NetworkDerivatives, points: np.ndarray, i: int, free: str, omega: float, steps: int = 30):
    """``(X, p, omega)`` next to where the pair that crossed between rows ``i`` and ``i + 1`` (nearest
    ``i omega`` there) has real part 0: bisection along the rows' segment, the equilibrium solved at each
    parameter and the pair followed by continuity. None if the pair does not change sign or a solve fails.

    Where tens of pairs lie within a few percent in frequency (Wilson-Cowan, 20 nodes), Newton's method on the
    Hopf system from the interpolated rows converged to a neighbouring pair; from here it starts next to its
    own."""
    a, b = points[i], points[i + 1]
    ends = [_equilibrium_between(D, a, b, w, (a if w == 0.0 else b)[:-1], free) for w in (0.0, 1.0)]
    if any(e is None for e in ends):
        return None

    def nearest(ev, target):
        upper = ev[ev.imag > 0]
        return complex(upper[np.argmin(np.abs(upper - target))]) if upper.size else None

    lam_a, lam_b = nearest(ends[0][2], 1j * omega), nearest(ends[1][2], 1j * omega)
    if lam_a is None or lam_b is None or (lam_a.real > 0) == (lam_b.real > 0):
        return None
    lo, hi, X_lo, X_hi = 0.0, 1.0, ends[0][1], ends[1][1]
    best = ends[0] + (lam_a,)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        got = _equilibrium_between(D, a, b, mid, 0.5 * (X_lo + X_hi), free)
        if got is None:
            return None
        lam = nearest(got[2], lam_a + mid * (lam_b - lam_a))
        if lam is None:
            return None
        best = got + (lam,)
        if (lam.real > 0) == (lam_a.real > 0):
            lo, X_lo = mid, got[1]
        else:
            hi, X_hi = mid, got[1]
        if abs(lam.real) < 1e-9 * max(1.0, abs(lam)):
            break
    p, X, _, lam = best
    return X, p, lam.imag


def verify_pattern_point(D: NetworkDerivatives, points: np.ndarray, sp: SpecialPoint, free: str,
                         refine: bool = False) -> PatternVerification:
    """Solve the defining system of a detected point of a pattern branch (rows ``points`` = ``(X, p)``);
    ``refine``: a Hopf point from the bisected crossing of its pair (:func:`_hopf_guess`)."""
    solver = _SOLVERS[sp.kind]
    i = sp.index
    j = min(i + 1, len(points) - 1)
    # a fold is a row; a crossing lies between rows i and i + 1, where it was interpolated
    guess = points[i]
    if sp.kind is not SpecialKind.LP:
        span = points[j, -1] - points[i, -1]
        w = (sp.parameters[free] - points[i, -1]) / span if span else 0.5
        guess = points[i] + (w if 0.0 <= w <= 1.0 else 0.5) * (points[j] - points[i])
    values = {free: float(guess[-1])}
    omega = sp.details.get("omega_guess")
    if refine and sp.kind is SpecialKind.HB and omega is not None and j == i + 1:
        try:
            found = _hopf_guess(D, points, i, free, omega)
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            found = None
        if found is None:
            return PatternVerification(ok=False, residual=math.inf, method=HOPF_METHOD, value=float(guess[-1]),
                                       X=guess[:-1], vector=np.empty(0),
                                       reason="the crossing pair could not be followed between the rows")
        X, p, omega = found
        guess, values = np.concatenate([X, [p]]), {free: p}
    try:
        result = solver(D, guess[:-1], values, free, omega) if omega is not None else solver(D, guess[:-1], values,
                                                                                              free)
    except (BifnetError, np.linalg.LinAlgError, ValueError, FloatingPointError) as error:
        return PatternVerification(ok=False, residual=math.inf, method=solver.__name__, value=float(guess[-1]),
                                   X=guess[:-1], vector=np.empty(0), reason=f"failed: {error}")
    if result.ok and not _next_to_rows(points, i, np.concatenate([result.X, [result.value]])):
        result = dataclasses.replace(result, ok=False,
                                     reason=f"Newton's method converged to {free} = {result.value:.8g}, away from "
                                            f"the detected point near {guess[-1]:.8g}")
    if result.ok:
        from bifnet.patterns.equilibria import COLLAPSE, _nonuniform

        N, n = D.shape
        rows = min(_nonuniform(points[i], N, n), _nonuniform(points[j], N, n))
        a, b = (points[k, :-1].reshape(N, n) for k in (i, j))
        through = float(np.sum((a - a.mean(axis=0)) * (b - b.mean(axis=0)))) < 0    # the pattern crosses it
        if not through and _nonuniform(result.X, N, n) < COLLAPSE * rows:
            # a transverse point of the homogeneous branch next to the pattern's rows (Wilson-Cowan, 20 nodes:
            # a "BP" at spread 1e-15, 0.01 from a pattern that turns at a fold before reaching it); where the
            # pattern passes through the homogeneous state between the rows, that point is its own
            result = dataclasses.replace(result, ok=False,
                                         reason=f"Newton's method converged to the homogeneous state at {free} = "
                                                f"{result.value:.8g}, not a point of this pattern")
    return result


def _twin(result, kind, solutions, kinds):
    """The name of a point already verified that ``result`` is (same kind, parameter and state), or None."""
    return next((name for name, other in solutions.items() if result.ok and kinds[name] is kind
                 and abs(other.value - result.value) <= 1e-9 * max(1.0, abs(result.value))
                 and np.max(np.abs(other.X - result.X)) <= 1e-7 * max(1.0, float(np.max(np.abs(result.X))))), None)


def verify_pattern_points(D: NetworkDerivatives, points: np.ndarray, special, free: str, skip=()
                          ) -> tuple[list[SpecialPoint], dict]:
    """Verify every LP, HB and BP of a pattern branch; returns ``(points, solutions)``.

    ``solutions`` maps a verified point's name to its :class:`PatternVerification` (full
    state and eigenvector, used to start two-parameter loci). Points in ``skip`` (names)
    are passed through unchanged. A point that fails keeps ``located = False``, with
    the residual reached, the method and the reason.
    """
    N, n = D.shape
    out, solutions, out_kinds = [], {}, {}
    for sp in special:
        if sp.name in skip or sp.kind not in _SOLVERS:
            out.append(sp)
            continue
        result = verify_pattern_point(D, points, sp, free)
        twin = _twin(result, sp.kind, solutions, out_kinds)
        if (not result.ok or twin is not None) and sp.kind is SpecialKind.HB and "omega_guess" in sp.details:
            # Newton's method went to a neighbouring pair: again from the bisected crossing of its own
            again = verify_pattern_point(D, points, sp, free, refine=True)
            if again.ok and _twin(again, sp.kind, solutions, out_kinds) is None:
                result, twin = again, None
            elif not result.ok:
                result = dataclasses.replace(result, reason=f"{result.reason}; from the bisected crossing of its "
                                                            f"pair: {again.reason or 'a point already verified'}")
        if twin is not None:
            result = dataclasses.replace(result, ok=False, reason=f"Newton's method converged to the point "
                                                                  f"already verified as {twin}")
        details = dict(sp.details)
        details.pop("omega_guess", None)
        if not result.ok:
            details["reason"] = result.reason
            log.warning("  pattern %s near %s = %.8g failed verification: %s", sp.name, free, sp.parameters[free],
                        result.reason)
            out.append(dataclasses.replace(sp, located=False, residual=float(result.residual),
                                           verification=result.method, details=details))
            continue
        details["engine_value"] = float(sp.parameters[free])
        if sp.kind is SpecialKind.HB:
            try:
                l1 = pattern_lyapunov_coefficient(D, result.X, {free: result.value}, result.omega)
            except (np.linalg.LinAlgError, ValueError) as error:
                log.warning("  pattern %s: no first Lyapunov coefficient: %s", sp.name, error)
                l1 = math.nan
            details["l1"] = l1
            details["criticality"] = ("super" if l1 < 0 else "sub" if l1 > 0 else "degenerate") if np.isfinite(l1) \
                else "failed"
        means = result.X.reshape(N, n).mean(axis=0)
        period = 2 * math.pi / result.omega if sp.kind is SpecialKind.HB else float("nan")
        out.append(dataclasses.replace(
            sp, parameters={free: result.value}, state=tuple(float(v) for v in means),
            eigenvalues=tuple(complex(e) for e in result.eigenvalues), period=period, located=True,
            residual=float(result.residual), verification=result.method, details=details))
        solutions[sp.name] = result
        out_kinds[sp.name] = sp.kind
    return out, solutions
