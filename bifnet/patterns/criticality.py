"""Criticality of transverse bifurcations of the full network, by exact mode reduction.

At a homogeneous equilibrium ``x*`` a transverse bifurcation of mode ``a`` is a
bifurcation of the whole ``N n``-dimensional network. Its normal-form
coefficients (the first Lyapunov coefficient ``l1`` of a transverse Hopf
point; the quadratic and cubic coefficients of a transverse branch point)
are computed here without forming anything of size ``N n``: the nonlinearity
is node-local in the node's *extended* variables ``xi_i = (x_i, C_i)`` and the
inputs ``C_i`` are linear in the network state, so every multilinear term
splits into a node-level tensor contraction times a moment of the operator's
eigenvectors. The derivation is in ``docs/science.md`` ("Criticality of
transverse bifurcations"); the formulas are Kuznetsov's, evaluated exactly
(second and third derivatives from sympy).

Normalisation: the critical eigenvector of the full network is
``Q = u_a (x) q`` with ``|u_a| = |q| = 1`` (so ``|Q| = 1`` in ``R^(N n)``), the
adjoint functional ``Pi = l_a (x) pi`` with ``l_a u_a = 1``, ``pi q = 1``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Mapping

import numpy as np

from bifnet.errors import BifnetError
from bifnet.model import NodeModel

log = logging.getLogger("bifnet.patterns")

#: Relative size below which the quadratic coefficient of a branch point counts as zero (a pitchfork).
QUADRATIC_ZERO = 1e-9


@dataclasses.dataclass(frozen=True)
class TransverseNormalForm:
    """Normal-form coefficients of the full network at a transverse bifurcation of one mode.

    Attributes
    ----------
    kind : str
        ``"HB"`` (a pair ``+-i omega`` of ``J(Lambda)``) or ``"BP"`` (a zero eigenvalue
        of ``J(Lambda)``: a branch point of the full network, since the
        homogeneous branch continues through it).
    mode : int
        Mode number (1-based) of the operator.
    Lambda : complex
        Its eigenvalue.
    eigenvalue : complex
        The critical eigenvalue of ``J(Lambda)`` (``i omega`` with ``omega > 0``, or ~0).
    omega : float
        Angular frequency (rad/ms) of a Hopf point; NaN for a branch point.
    l1 : float
        First Lyapunov coefficient (Kuznetsov's normalisation, ``|Q| = 1``); NaN for a branch point.
    quadratic : float
        ``a2 = Pi B(Q, Q) / 2`` of a branch point (centre-manifold equation
        ``y' = mu y + a2 y^2 + a3 y^3``); NaN for a Hopf point.
    cubic : float
        ``a3 = (Pi C(Q, Q, Q) + 3 Pi B(Q, h2)) / 6`` of a branch point; NaN for a Hopf point.
    criticality : str
        ``"super"`` / ``"sub"`` (Hopf: sign of ``l1``; a branch point with
        ``a2 = 0``, a pitchfork: sign of ``a3``), ``"transcritical"`` (a branch
        point with ``a2 != 0``), or ``"degenerate"`` (a repeated eigenvalue of the
        operator or of ``J(Lambda)``, or a zero coefficient).
    q : ndarray
        Critical eigenvector of ``J(Lambda)`` (unit norm).
    u : ndarray
        Right eigenvector of the mode operator (unit norm).
    """

    kind: str
    mode: int
    Lambda: complex
    eigenvalue: complex
    omega: float
    l1: float
    quadratic: float
    cubic: float
    criticality: str
    q: np.ndarray = dataclasses.field(repr=False, default=None)
    u: np.ndarray = dataclasses.field(repr=False, default=None)


def _node_tensors(model: NodeModel, x, parameters: Mapping[str, float]):
    """``(H, T, embedding)`` of the node at the homogeneous state ``x``.

    ``H``, ``T``: second and third derivatives of the node equations in the
    extended variables ``(x, C)`` at ``(x, C*)`` with ``C*_k = sigma s_k Lambda_u x_{c_k}``;
    ``embedding(Lambda)``: the ``(n + m, n)`` matrix ``E`` with ``xi(u (x) y) = u_i E y``.
    """
    from bifnet.continuation.verify import derivative_tensors

    coupling = model.coupling
    sign, uniform = coupling.mode_sign, coupling.uniform_eigenvalue
    strengths = np.array(model.strengths(parameters), dtype=float)
    idx = list(model.coupled_indices)
    x = np.asarray(x, dtype=float)
    xi = np.concatenate([x, sign * strengths * uniform * x[idx]])
    p = np.array([float(parameters[n]) for n in model.parameter_names])
    fH, fT = derivative_tensors(tuple(model.equations), model.state_symbols + model.input_symbols,
                                model.parameter_symbols)
    n, m = model.n_variables, len(idx)

    def embedding(Lambda):
        E = np.zeros((n + m, n), dtype=complex)
        E[:n] = np.eye(n)
        for k, c in enumerate(idx):
            E[n + k, c] = sign * strengths[k] * Lambda
        return E

    return fH(xi, p), fT(xi, p), embedding


def _mode_matrices(model: NodeModel, x, parameters: Mapping[str, float]):
    from bifnet.codegen import mode_jacobian_functions

    A_fn, B_fn = mode_jacobian_functions(model)
    p = np.array([float(parameters[n]) for n in model.parameter_names])
    x = np.asarray(x, dtype=float)
    return np.asarray(A_fn(x, p), dtype=float), np.asarray(B_fn(x, p), dtype=float)


def _modal_basis(operator):
    """Eigenvalues, right eigenvectors (columns, unit norm) and left eigenvectors (rows, ``L U = I``)."""
    spectrum = operator.spectrum()
    lam = np.asarray(spectrum.eigenvalues).astype(complex)
    U = np.asarray(spectrum.eigenvectors).astype(complex)
    cond = np.linalg.cond(U)
    if not np.isfinite(cond) or cond > 1e10:
        raise BifnetError(f"the {operator.description} is not diagonalisable to working precision "
                          f"(condition number of its eigenvectors {cond:.2g}); no mode reduction")
    return lam, U, np.linalg.inv(U)


def _multiplicity(lam, a, tolerance=1e-9) -> int:
    return int(np.sum(np.abs(lam - lam[a]) <= tolerance * max(1.0, abs(lam[a]))))


def _contract2(H, a, b):
    return np.einsum("ijk,j,k->i", H, a, b)


def _contract3(T, a, b, c):
    return np.einsum("ijkl,j,k,l->i", T, a, b, c)


def transverse_normal_form(model: NodeModel, operator, parameters: Mapping[str, float], x, mode: int,
                           kind: str | None = None) -> TransverseNormalForm:
    """Normal-form coefficients of the full network at a transverse bifurcation of ``mode``.

    Parameters
    ----------
    model : NodeModel
        A model with coupling.
    operator : CouplingOperator
        The model's operator on the connectome (``spectrum()`` gives the modes).
    parameters : mapping
        Every model parameter, at the bifurcation.
    x : array_like
        The homogeneous equilibrium there.
    mode : int
        Mode number (1-based), not the uniform one.
    kind : {"HB", "BP", None}
        Which bifurcation; ``None``: ``"HB"`` if the eigenvalue of ``J(Lambda)``
        closest to the imaginary axis is complex, else ``"BP"``.

    Returns
    -------
    TransverseNormalForm

    Notes
    -----
    With ``F_i(X) = f(xi_i)``, ``xi_i = (x_i, sigma s_k (M X_{c_k})_i)``, and
    ``U`` / ``L = U^-1`` the right / left eigenvectors of ``M``:
    ``B(Q, Q)`` has node components ``u_i^2 f2(eta, eta)`` with
    ``eta = E(Lambda_a) q``; expanding ``u o u = sum_b alpha_b u_b``
    (``alpha = L (u o u)``) the resolvents act mode by mode with
    ``J(Lambda_b)``; projections give the moments ``gamma_b = sum_i l_i u_i u_{b,i}``.
    Hopf (Kuznetsov, *Elements of Applied Bifurcation Theory*, (3.20)):
    ``l1 = Re[m3 pi f3(eta, eta, etab) - 2 sum_b gamma_b beta_b pi f2(eta, E_b J_b^-1 r11)
    + sum_b gammab_b alpha_b pi f2(etab, E_b (2 i omega - J_b)^-1 r20)] / (2 omega)``.
    See ``docs/science.md`` for the derivation and the branch-point coefficients.

    Examples
    --------
    >>> nf = transverse_normal_form(ping, operator, params, x, mode=68)   # doctest: +SKIP
    >>> nf.criticality                                                    # doctest: +SKIP
    'super'
    """
    model.require_coupling("a transverse normal form")
    lam, U, L = _modal_basis(operator)
    N = lam.size
    if not 1 <= int(mode) <= N:
        raise BifnetError(f"mode {mode}: the connectome has modes 1..{N}")
    a = int(mode) - 1
    if kind == "BP" and abs(lam[a] - model.coupling.uniform_eigenvalue) < 1e-9:
        raise BifnetError(f"mode {mode} is the uniform mode: a zero eigenvalue there is a fold of the homogeneous "
                          f"state, not a transverse branch point")
    A, B = _mode_matrices(model, x, parameters)
    n = A.shape[0]
    La = lam[a]
    Ja = A + La * B
    ev, V = np.linalg.eig(Ja)
    scale = max(1.0, float(np.max(np.abs(ev))))
    if kind is None:
        k0 = int(np.argmin(np.abs(ev.real)))
        kind = "HB" if abs(ev[k0].imag) > 1e-8 * scale else "BP"
    if kind not in ("HB", "BP"):
        raise BifnetError(f"kind must be 'HB' or 'BP', got {kind!r}")
    nan = float("nan")
    u = U[:, a].copy()
    ell = L[a].copy()
    H, T, E = _node_tensors(model, x, parameters)
    degenerate = _multiplicity(lam, a) > 1
    if kind == "HB":
        cand = np.flatnonzero(np.abs(ev.imag) > 1e-8 * scale)
        if cand.size == 0:
            raise BifnetError(f"mode {mode}: J(Lambda) has no complex eigenvalue pair at this point")
        k = int(cand[np.argmin(np.abs(ev[cand].real))])
        mu, q = ev[k], V[:, k]
        if mu.imag < 0:   # use the eigenvalue +i omega: its eigenvector is u_a (x) q of the conjugate mode
            mu, q, u, ell, La = np.conj(mu), np.conj(q), np.conj(u), np.conj(ell), np.conj(La)
            Ja = np.conj(Ja)
        omega = float(mu.imag)
    else:
        k = int(np.argmin(np.abs(ev)))
        mu, q = ev[k], V[:, k]
        omega = nan
    q = q / np.linalg.norm(q)
    u = u / np.linalg.norm(u)
    ell = ell / (ell @ u)
    wl, Wl = np.linalg.eig(Ja.T)
    pi = Wl[:, int(np.argmin(np.abs(wl - mu)))]
    pi = pi / (pi @ q)
    close = np.sum(np.abs(ev - ev[k]) <= 1e-6 * scale)
    degenerate = degenerate or close > 1
    q_out, u_out = q.copy(), u.copy()
    if degenerate:
        return TransverseNormalForm(kind=kind, mode=int(mode), Lambda=complex(lam[a]), eigenvalue=complex(mu),
                                    omega=omega, l1=nan, quadratic=nan, cubic=nan, criticality="degenerate",
                                    q=q_out, u=u_out)
    eta = E(La) @ q
    Jb = A[None, :, :] + lam[:, None, None] * B[None, :, :]
    Eb = np.stack([E(v) for v in lam])                  # (N, n + m, n)
    if kind == "HB":
        etab = np.conj(eta)
        r20 = _contract2(H, eta, eta)
        r11 = _contract2(H, eta, etab)
        alpha = L @ (u * u)
        beta = L @ (u * np.conj(u))
        gamma = (ell * u) @ U                           # l_a (u_a o u_b)
        gammab = (ell * np.conj(u)) @ U                 # l_a (conj u_a o u_b)
        m3 = ell @ (u * u * np.conj(u))
        h11 = np.linalg.solve(Jb, (beta[:, None] * r11[None, :])[..., None])[..., 0]
        h20 = np.linalg.solve(2j * omega * np.eye(n)[None] - Jb, (alpha[:, None] * r20[None, :])[..., None])[..., 0]
        y11 = np.einsum("bkn,bn->bk", Eb, h11)
        y20 = np.einsum("bkn,bn->bk", Eb, h20)
        s11 = np.sum(gamma * np.einsum("i,ijk,j,bk->b", pi, H, eta, y11))
        s20 = np.sum(gammab * np.einsum("i,ijk,j,bk->b", pi, H, etab, y20))
        c3 = m3 * (pi @ _contract3(T, eta, eta, etab))
        l1 = float(np.real(c3 - 2 * s11 + s20) / (2 * omega))
        crit = "super" if l1 < 0 else ("sub" if l1 > 0 else "degenerate")
        return TransverseNormalForm(kind="HB", mode=int(mode), Lambda=complex(lam[a]), eigenvalue=complex(mu),
                                    omega=omega, l1=l1, quadratic=nan, cubic=nan, criticality=crit,
                                    q=q_out, u=u_out)
    # branch point: y' = mu y + a2 y^2 + a3 y^3 on the centre manifold X = x* + y Q + y^2 h2 / 2 + ...
    r20 = _contract2(H, eta, eta)
    alpha = L @ (u * u)
    gamma = (ell * u) @ U
    m2 = ell @ (u * u)                              # l_a (u_a o u_a) = alpha_a
    m3 = ell @ (u * u * u)
    a2 = 0.5 * complex(m2 * (pi @ r20))
    size2 = 0.5 * float(np.sum(np.abs(ell) * np.abs(u) ** 2)) * float(np.linalg.norm(pi)) \
        * float(np.linalg.norm(H.ravel())) * float(np.linalg.norm(eta)) ** 2
    rhs = -(alpha[:, None] * r20[None, :])
    same = np.abs(lam - lam[a]) <= 1e-9 * max(1.0, abs(lam[a]))
    h = np.empty((N, n), dtype=complex)
    others = ~same
    h[others] = np.linalg.solve(Jb[others], rhs[others][..., None])[..., 0]
    # the critical mode: J h = -(r - (pi r) q), pi h = 0 (bordered)
    bordered = np.zeros((n + 1, n + 1), dtype=complex)
    bordered[:n, :n], bordered[:n, n], bordered[n, :n] = Ja, q, pi
    for b in np.flatnonzero(same):
        r = rhs[b] - (pi @ rhs[b]) * q
        h[b] = np.linalg.solve(bordered, np.concatenate([r, [0.0]]))[:n]
    yb = np.einsum("bkn,bn->bk", Eb, h)
    s2 = np.sum(gamma * np.einsum("i,ijk,j,bk->b", pi, H, eta, yb))
    c3 = m3 * (pi @ _contract3(T, eta, eta, eta))
    a3 = complex((c3 + 3 * s2) / 6.0)
    a2r, a3r = float(a2.real), float(a3.real)
    if abs(a2r) > QUADRATIC_ZERO * max(size2, 1e-300):
        crit = "transcritical"
    else:
        crit = "super" if a3r < 0 else ("sub" if a3r > 0 else "degenerate")
    return TransverseNormalForm(kind="BP", mode=int(mode), Lambda=complex(lam[a]), eigenvalue=complex(mu),
                                omega=nan, l1=nan, quadratic=a2r, cubic=a3r, criticality=crit, q=q_out, u=u_out)


def locate_transverse_point(model: NodeModel, parameters: Mapping[str, float], free: str, Lambda,
                            bracket: tuple[float, float], guesses, kind: str | None = None
                            ) -> tuple[float, np.ndarray]:
    """The exact parameter value and equilibrium where mode ``Lambda``'s growth rate vanishes.

    Parameters
    ----------
    model : NodeModel
    parameters : mapping
        Every model parameter (``free`` is overwritten).
    free : str
        The parameter varied.
    Lambda : complex
        The mode's eigenvalue.
    bracket : (float, float)
        Values of ``free`` with growth rates of opposite signs (two rows of a branch).
    guesses : (array_like, array_like)
        Homogeneous equilibria at the ends of the bracket.
    kind : {None, "LP", "BP"}
        ``"LP"`` / ``"BP"`` (a real eigenvalue crossing zero): where the growth rate does not change
        sign in the bracket (the mode is already unstable through other eigenvalues, e.g. on the
        saddle branch between two homogeneous folds), the root of ``det J(Lambda)`` instead.

    Returns
    -------
    (float, ndarray)
        The value of ``free`` and the equilibrium (Newton's residual below 1e-10).

    Notes
    -----
    Brent's method on the leading real part of the eigenvalues of
    ``J(Lambda)`` (or on ``det J(Lambda)``, see ``kind``) at the equilibrium solved by
    Newton's method (exact Jacobian) from the interpolated guess; converges to ``xtol = 1e-13``.
    """
    from scipy.optimize import brentq

    from bifnet.continuation.equilibria import find_equilibrium

    lo, hi = (float(v) for v in bracket)
    x_lo, x_hi = (np.asarray(g, dtype=float) for g in guesses)
    params = dict(parameters)
    lam = complex(Lambda)
    states = {}

    use_det = False

    def rate(value):
        t = 0.0 if hi == lo else (value - lo) / (hi - lo)
        guess = (1 - t) * x_lo + t * x_hi
        params[free] = float(value)
        x = find_equilibrium(model, params, guess, settle_time=0.0)
        states[value] = x
        A, B = _mode_matrices(model, x, params)
        J = A + (lam if lam.imag else lam.real) * B
        if use_det:
            return float(np.linalg.det(J).real)
        return float(np.max(np.linalg.eigvals(J).real))

    r_lo, r_hi = rate(lo), rate(hi)
    if kind in ("LP", "BP") and not lam.imag and r_lo > 0 and r_hi > 0:
        use_det = True
        r_lo, r_hi = rate(lo), rate(hi)
    if not r_lo * r_hi < 0:
        if r_lo == 0:
            return lo, states[lo]
        if r_hi == 0:
            return hi, states[hi]
        raise BifnetError(f"the growth rate of Lambda = {Lambda} does not change sign between "
                          f"{free} = {lo:.8g} and {hi:.8g}")
    value = brentq(rate, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps, maxiter=200)
    rate(value)
    return float(value), states[value]


def crossing_columns(model: NodeModel, operator, branch, crossing, group) -> dict:
    """Columns ``l1``, ``nf_quadratic``, ``nf_cubic``, ``criticality`` (and the located point) of a
    row of ``transverse_points.csv`` for a sign change of a mode's growth rate on an equilibrium branch.

    The point is located exactly (:func:`locate_transverse_point`) and the
    normal form computed there (:func:`transverse_normal_form`); a failure gives NaN and
    ``criticality = "failed: <reason>"`` (logged).
    """
    free = branch.free[0]
    i = crossing.index
    j = min(i + 1, len(branch) - 1)
    out = {"l1": math.nan, "nf_quadratic": math.nan, "nf_cubic": math.nan, "criticality": "",
           f"{free}_located": math.nan, "frequency_hz_located": math.nan}
    if len(group.modes) > 1:
        out["criticality"] = f"degenerate (mode multiplicity {len(group.modes)})"
        return out
    row = lambda k: np.array([branch[v][k] for v in branch.variables], dtype=float)  # noqa: E731
    try:
        kind = "HB" if crossing.kind.value == "HB" else "BP"
        value, x = locate_transverse_point(model, dict(branch.parameters), free, crossing.Lambda,
                                           (branch[free][i], branch[free][j]), (row(i), row(j)), kind)
        params = {**branch.parameters, free: value}
        nf = transverse_normal_form(model, operator, params, x, group.mode, kind)
    except (BifnetError, np.linalg.LinAlgError, ValueError, RuntimeError) as error:
        log.warning("  normal form of mode %d near %s = %.6g failed: %s", group.mode, free, crossing.value, error)
        out["criticality"] = f"failed: {error}"
        return out
    out.update({"l1": nf.l1, "nf_quadratic": nf.quadratic, "nf_cubic": nf.cubic, "criticality": nf.criticality,
                f"{free}_located": value,
                "frequency_hz_located": nf.omega / (2 * math.pi) * 1000.0 if kind == "HB" else 0.0})
    return out
