"""Where a branch of oscillatory patterns turns or ends: a reversal told from a fold, and the Hopf point
where the amplitude vanishes.

The shooting unknowns ``z = (X0, T, p)`` do not tell whether two rows are the same orbit (``X0`` is one
point of it, wherever the Poincaré section cut it). The tests here use a **signature** of each orbit that
does not depend on the phase: the period, the parameter, and per state component the time mean and the
modulus of the first harmonic (the components weighted ``1 / D``, as in the continuation's norm,
:func:`bifnet.patterns.cycles.arclength_weights`).

* A **reversal** (the continuation going back over orbits it has already computed) turns the signature
  around: the secant from the last row to the new one has a negative inner product with the secant from
  the row before. At a **fold of cycles** only the parameter turns; the period, means and amplitudes go
  on (they are regular functions of arclength there), and the rows keep going forwards.
* Near a **Hopf point** where the pattern shrinks to the homogeneous state, ``p - p_H`` is proportional
  to the squared amplitude ``|c1|^2`` (normal form), and the branch in ``z`` passes smoothly through
  ``|c1| = 0`` onto the same orbits shifted by half a period: a reversal in the signature. The branch
  ends there instead: ``p_H`` is extrapolated from the last two rows (linear in ``|c1|^2``), a mode of
  the operator whose ``J(Lambda)`` has a pair crossing the imaginary axis in the bracket, at the orbit's
  frequency, is sought at the homogeneous equilibrium, and its Hopf point is located on the mode
  Jacobian (:func:`bifnet.patterns.criticality.locate_transverse_point`).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from bifnet.errors import BifnetError

log = logging.getLogger("bifnet.patterns")

#: Two successive extrapolations of the Hopf point agreeing to this share of the distance left start the search.
EXTRAPOLATION_AGREEMENT = 0.05
#: The branch ends at a located Hopf point once an orbit's amplitude is its normal form's to this (relative):
#: on the 6-node network (mode 6, Iext_e = 49.155) 0.8 % at |c1| = 1.8, 0.3 % at 1.2, 4 % at 4.3.
NORMAL_FORM_AGREEMENT = 0.01


def signature(row, D: int) -> np.ndarray:
    """``(T, p, mean / sqrt(D), |c1| / sqrt(D))`` of an orbit (a row of the continuation: ``z``, ``mean``,
    ``c1``): independent of where on the orbit ``X0`` lies."""
    z = row["z"]
    scale = 1.0 / math.sqrt(D)
    return np.concatenate([[z[D], z[D + 1]], scale * np.asarray(row["mean"]), scale * np.abs(row["c1"])])


def turns_back(a, b, c, D: int) -> bool:
    """Whether orbit ``c``, computed after ``b`` (itself after ``a``), goes back along the branch: the
    signature secants ``b - a`` and ``c - b`` have a negative inner product."""
    sa, sb, sc = (signature(r, D) for r in (a, b, c))
    return float((sc - sb) @ (sb - sa)) < 0.0


def _critical(J, omega):
    """The eigenvalue of ``J`` with positive imaginary part closest to ``i omega`` (None if all are real)."""
    ev = np.linalg.eigvals(J)
    ev = ev[ev.imag > 1e-9 * max(1.0, float(np.max(np.abs(ev))))]
    return None if ev.size == 0 else complex(ev[np.argmin(np.abs(ev.imag - omega))])


def _extrapolated(a, b, D):
    """``p_H`` where ``|c1|^2``, linear in ``p`` through rows ``a`` and ``b``, vanishes (NaN unless it falls)."""
    A_a, A_b = float(np.linalg.norm(a["c1"])), float(np.linalg.norm(b["c1"]))
    if not A_b < A_a:
        return float("nan")
    p_a, p_b = float(a["z"][D + 1]), float(b["z"][D + 1])
    return p_b - A_b ** 2 * (p_b - p_a) / (A_b ** 2 - A_a ** 2)


def approaching_hopf(rows, D: int) -> bool:
    """Whether the last rows head for a Hopf point: the amplitude falls over the last three rows, and either
    the next step of the same size in ``p`` would pass the extrapolated ``p_H`` or the two last extrapolations
    agree to :data:`EXTRAPOLATION_AGREEMENT` of the distance left (``|c1|^2`` linear in ``p``, as in the
    normal form)."""
    if len(rows) < 3:
        return False
    a, b, c = rows[-3:]
    first, last = _extrapolated(a, b, D), _extrapolated(b, c, D)
    if not (np.isfinite(first) and np.isfinite(last)):
        return False
    p_b, p_c = float(b["z"][D + 1]), float(c["z"][D + 1])
    left = abs(last - p_c)
    return left <= abs(p_c - p_b) or abs(last - first) <= EXTRAPOLATION_AGREEMENT * left


def normal_form_amplitude(end, p: float) -> float:
    """``|z| = sqrt(-Re(mu') (p - p_H) / (omega l1))`` of the Hopf point ``end`` (NaN off its side)."""
    coefficient = -end["speed"] / (end["omega"] * end["l1"])
    return math.sqrt(coefficient * (p - end["p"])) if coefficient * (p - end["p"]) >= 0 else float("nan")


def normal_form_agrees(end, row, D: int, tolerance: float = None) -> bool:
    """Whether the orbit's amplitude ``|c1|`` is the normal form's of ``end`` to ``tolerance`` (relative;
    default :data:`NORMAL_FORM_AGREEMENT`): from there to the Hopf point the orbits are the normal form's."""
    tolerance = NORMAL_FORM_AGREEMENT if tolerance is None else tolerance
    predicted = normal_form_amplitude(end, float(row["z"][D + 1]))
    return bool(abs(float(np.linalg.norm(row["c1"])) - predicted) <= tolerance * predicted)


def hopf_end_point(model, operator, parameters, free, rows, N: int, n: int):
    """The Hopf point of the homogeneous state that the branch reaches as its amplitude vanishes, or None.

    Parameters
    ----------
    model, operator, parameters, free
        As for :func:`bifnet.patterns.cycles.oscillatory_pattern_branch`.
    rows : list of dict
        The continuation's orbits so far (``z``, ``mean``, ``c1``).
    N, n : int
        Regions and state variables per region.

    Returns
    -------
    dict or None
        ``p``, ``x`` (the homogeneous equilibrium), ``omega``, ``eigenvalue``, ``mode``, ``Lambda``,
        ``extrapolated`` (``p_H`` from the rows), ``speed`` (``d Re lambda / dp``), ``overlap`` (share of
        the last orbit's first harmonic in the mode's node vector), ``l1``.

    Notes
    -----
    Only when the amplitude ``A = |c1|`` fell between the last two rows:
    ``p_H = p_b - A_b^2 (p_b - p_a) / (A_b^2 - A_a^2)``. The modes whose critical pair (the eigenvalue of
    ``J(Lambda)`` closest to ``i 2 pi / T``) changes the sign of its real part between ``p_b`` and
    ``p_b + 2 (p_H - p_b)`` are candidates; the one carrying most of the orbit's first harmonic is located.
    """
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.patterns.criticality import _mode_matrices, locate_transverse_point, transverse_normal_form

    if len(rows) < 2:
        return None
    D = N * n
    b = rows[-1]
    p_b = float(b["z"][D + 1])
    p_H = _extrapolated(rows[-2], b, D)
    if not np.isfinite(p_H) or p_H == p_b:
        return None
    far = p_b + 2.0 * (p_H - p_b)
    omega = 2 * np.pi / float(b["z"][D])
    spectrum = operator.spectrum()
    try:
        guess = np.asarray(b["mean"]).reshape(N, n).mean(axis=0)
        x_b = find_equilibrium(model, {**parameters, free: p_b}, guess, settle_time=0.0)
        x_f = find_equilibrium(model, {**parameters, free: far}, x_b, settle_time=0.0)
        ends = [(_mode_matrices(model, x_b, {**parameters, free: p_b})),
                (_mode_matrices(model, x_f, {**parameters, free: far}))]
    except BifnetError as error:
        log.debug("  no homogeneous equilibrium next to the vanishing amplitude: %s", error)
        return None
    c1 = np.asarray(b["c1"]).reshape(N, n)
    candidates = []
    for m, Lambda in enumerate(spectrum.eigenvalues, start=1):
        lam = complex(Lambda) if abs(np.imag(Lambda)) > 0 else float(np.real(Lambda))
        critical = [_critical(A + lam * B, omega) for A, B in ends]
        if any(c is None for c in critical) or critical[0].real * critical[1].real > 0:
            continue
        u = spectrum.eigenvectors[:, m - 1]
        overlap = float(np.sum(np.abs(np.conj(u) @ c1) ** 2) / (np.vdot(u, u).real * np.sum(np.abs(c1) ** 2)))
        candidates.append((overlap, m, lam))
    if not candidates:
        log.debug("  no mode's pair crosses between %s = %.8g and %.8g", free, p_b, far)
        return None
    overlap, m, lam = max(candidates)
    try:
        value, x = locate_transverse_point(model, parameters, free, lam, (min(p_b, far), max(p_b, far)),
                                           (x_b, x_f) if p_b < far else (x_f, x_b))
    except BifnetError as error:
        log.debug("  the Hopf point of mode %d was not located: %s", m, error)
        return None
    at = {**parameters, free: value}
    A, B = _mode_matrices(model, x, at)
    eigenvalue = _critical(A + lam * B, omega)
    h = 1e-5 * max(1.0, abs(value))
    rates = []
    for v in (value - h, value + h):
        xv = find_equilibrium(model, {**parameters, free: v}, x, settle_time=0.0)
        Av, Bv = _mode_matrices(model, xv, {**parameters, free: v})
        rates.append(_critical(Av + lam * Bv, eigenvalue.imag).real)
    l1 = float("nan")
    try:
        l1 = float(transverse_normal_form(model, operator, at, x, m, "HB").l1)
    except BifnetError as error:
        log.debug("  no normal form at the end Hopf point: %s", error)
    log.info("  the amplitude vanishes at the Hopf point of mode %d, %s = %.10g (extrapolated from the rows: "
             "%.8g)", m, free, value, p_H)
    return {"p": float(value), "x": np.asarray(x, dtype=float), "omega": float(eigenvalue.imag),
            "eigenvalue": eigenvalue, "mode": int(m), "Lambda": lam, "extrapolated": float(p_H),
            "speed": (rates[1] - rates[0]) / (2 * h), "overlap": overlap, "l1": l1}
