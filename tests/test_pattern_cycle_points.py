"""LPC and NS points of oscillatory patterns (bifnet.patterns.verify_cycles), and the end of the branch
(bifnet.patterns.cycle_ends), checked against independent computations: the Floquet multipliers of a
monodromy integrated from the dense network Jacobian's variational equation (scipy DOP853 at rtol 1e-11:
neither bifnet's RK4 map nor its tangent kernels), the orbit's return under the network integrator
(DOPRI5), the eigenvalues of mode 6's block of the dense network Jacobian, and the rows of the branch.

The case: the 6-node network of test_pattern_cycles (ngnmm_ping, eps = 15, mode 6) continued further:
three complex pairs leave the unit circle at Iext_e = 46.97, 47.51, 47.91 (torus points of a stable, then
unstable pattern), and the amplitude falls to the second Hopf point of mode 6 (Iext_e = 49.1548, where
mode 6 turns stable again), where the branch ends. Before the continuation's norm was scaled, it turned
back at Iext_e = 49.033 (amplitude 0.845, period 3.4102) and ran over the same orbits again (a fake LPC,
and the three torus points met a second time).
"""

from pathlib import Path

import numpy as np
import pytest

from bifnet.continuation.branch import SpecialKind
from bifnet.model import load_model
from bifnet.network import build_network
from bifnet.network.core import network_rhs
from bifnet.patterns import verify_cycles
from bifnet.patterns.cycles import CycleSettings, ShootingProblem, oscillatory_pattern_branch

from test_pattern_cycles import MODE, _dense_monodromy
from test_patterns import _located, _random_operator


@pytest.fixture(scope="module")
def case():
    model = load_model("ngnmm_ping")
    operator = _random_operator(model, 6, 5)
    params, x = _located(model, operator, model.resolve_parameters({"eps": 15.0}), "Iext_e", 16.5, 17.0, MODE)
    settings = CycleSettings(ds=0.02, ds_max=1.0, max_steps=92, first_amplitude=0.01, check_return=False)
    branch = oscillatory_pattern_branch(model, operator, params, "Iext_e", x, MODE, settings)
    return model, operator, params, branch


def _points(branch, kind):
    return [sp for sp in branch.special_points if sp.kind is kind]


def test_torus_points_have_a_pair_on_the_unit_circle_by_an_independent_monodromy(case):
    """Each located NS point: inside its bracket, residual below 1e-9; the independent monodromy there has
    a pair with |mu| = 1 up to the RK4 map's own error (h = T / 128 ~ 0.027 ms: 3e-8), and to 1e-8 once
    the point is solved again from the same rows with 1024 steps per period."""
    model, operator, params, branch = case
    torus = [sp for sp in _points(branch, SpecialKind.NS) if sp.located]
    assert [sp.name for sp in torus] == ["NS1", "NS2", "NS3"]
    D = branch.engine["states"].shape[1] * branch.engine["states"].shape[2]
    mus = branch.engine["multipliers"]
    problem = ShootingProblem(model, operator, params, "Iext_e")

    def gap(z, angle):
        network = build_network(model, operator, {**params, "Iext_e": z[D + 1]})
        mu = np.linalg.eigvals(_dense_monodromy(network, z[:D], z[D]))
        critical = mu[np.argmin(np.abs(mu - np.exp(1j * angle)))]
        return abs(critical) - 1, abs(np.angle(critical)), mu

    for sp in torus:
        i = sp.index
        p = sp.parameters["Iext_e"]
        assert branch["Iext_e"][i] < p < branch["Iext_e"][i + 1]        # inside the bracket
        assert sp.residual < 1e-9 and "exact monodromy" in sp.verification
        z = branch.engine["verified_orbits"][sp.name]
        assert z[D + 1] == p and z[D] == sp.period
        g, angle, mu = gap(z, sp.details["multiplier_angle"])
        assert abs(g) < 1e-7, (sp.name, g)
        assert angle == pytest.approx(sp.details["multiplier_angle"], abs=1e-6)
        assert sp.details["direction"] == "out"
        assert np.sum(np.abs(mu) > 1 + 1e-6) == sp.details["unstable_others"]
        # solved again with 1024 RK4 steps per period (h^4 smaller by 8^4) from the same two rows
        crossing = min(verify_cycles.multiplier_crossings(mus[i], mus[i + 1]),    # NS2 and NS3 share rows
                       key=lambda c: abs(abs(np.angle(c.mu_b)) - sp.details["multiplier_angle"]))
        rows = [(np.concatenate([branch.engine["states"][k].ravel(), [branch["period"][k], branch["Iext_e"][k]]]),
                 None) for k in (i, i + 1)]
        (fine,), _ = verify_cycles.verify_bracket(problem, [SpecialKind.NS], rows, 1024, crossings=[crossing])
        assert fine.ok and fine.residual < 1e-9
        g, _, _ = gap(fine.z, sp.details["multiplier_angle"])
        assert abs(g) < 1e-8, (sp.name, g)
        assert fine.z[D + 1] == pytest.approx(p, abs=1e-3)
    # the orbit returns under the network integrator (adaptive DOPRI5)
    from bifnet.patterns.cycles import return_error

    z = branch.engine["verified_orbits"]["NS1"]
    network = build_network(model, operator, {**params, "Iext_e": z[D + 1]})
    assert return_error(network, z[:D], z[D], rtol=1e-11, atol=1e-13) < 1e-6


def _mode_block(model, operator, params, value, x, mode=MODE):
    """The ``n x n`` block of mode ``mode`` of the dense network Jacobian at the homogeneous equilibrium
    near ``x``: ``(v^T (x) I) J (u (x) I) / (v . u)``, ``u`` and ``v`` the right and left eigenvectors of the
    mode operator (numpy)."""
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.network.core import network_jacobian_dense

    p = {**params, "Iext_e": value}
    xs = find_equilibrium(model, p, x, settle_time=0.0)
    network = build_network(model, operator, p)
    J = network_jacobian_dense(network, np.tile(xs, network.n_regions))
    M = np.asarray(operator.mode_matrix, dtype=float)
    lam = operator.spectrum().eigenvalues[mode - 1]
    ev, R = np.linalg.eig(M)
    evl, L = np.linalg.eig(M.T)
    u = R[:, np.argmin(np.abs(ev - lam))]
    v = L[:, np.argmin(np.abs(evl - lam))]
    n = xs.size
    return np.kron(v[None, :], np.eye(n)) @ J @ np.kron(u[:, None], np.eye(n)) / (v @ u)


def test_the_branch_goes_forward_and_ends_at_the_second_hopf_point_of_its_mode(case):
    """The rows go forward: Iext_e increases at every row (there is no fold of cycles on this branch: no
    real multiplier passes through +1 between neighbouring rows) and the secants of (Iext_e, period,
    amplitude) never turn back; no LPC, no torus point met twice. The branch ends at the Hopf point of
    mode 6 where the amplitude vanishes: its Iext_e is the root of the growth rate of mode 6's block of the
    dense Jacobian to 1e-6 (|d Re lambda / d Iext_e| = 3.3e-4 and equilibria solved to 1e-10: 3e-7), and
    the last orbit lies where its amplitude multiplier puts it, p_H - p = -ln(mu) / (2 |Re lambda'| T),
    by the independent monodromy (5 %)."""
    from scipy.optimize import brentq

    model, operator, params, branch = case
    p, T, A = branch["Iext_e"], branch["period"], branch["amplitude"]
    secants = np.diff(np.stack([p, T, A], axis=1), axis=0)
    assert np.all(np.sum(secants[1:] * secants[:-1], axis=1) > 0)
    assert np.all(np.diff(p) > 0)
    assert not _points(branch, SpecialKind.LPC)
    assert all("the same point" not in sp.details.get("reason", "") for sp in branch.special_points)
    assert branch.status.startswith("Hopf point of mode 6"), branch.status
    end = branch.engine["end_hopf_index"]
    assert end == len(branch) - 1 and A[end] == 0 and branch["stable"][end] == -1
    mus = branch.engine["multipliers"]
    for k in range(1, end - 1):     # no real multiplier through +1 (the trivial one left out)
        assert all(c.kind is not SpecialKind.BP for c in verify_cycles.multiplier_crossings(mus[k], mus[k + 1]))
    # the Hopf point, independently: the growth rate of mode 6's block of the dense Jacobian
    x = branch.engine["mean"][end].mean(axis=0)

    def rate(value):
        return float(np.max(np.linalg.eigvals(_mode_block(model, operator, params, value, x)).real))

    p_H = brentq(rate, p[end - 1], p[end] + 0.5, xtol=1e-12)
    assert abs(p[end] - p_H) < 1e-6, (p[end], p_H)
    (hopf,) = [sp for sp in branch.special_points if sp.name == "HB2"]
    assert hopf.located and hopf.index == end and hopf.details["mode"] == MODE
    ev = np.linalg.eigvals(_mode_block(model, operator, params, p_H, x))
    omega = abs(float(ev[np.argmax(ev.real)].imag))
    assert T[end] == pytest.approx(2 * np.pi / omega, rel=1e-8)
    h = 1e-4
    speed = (rate(p_H + h) - rate(p_H - h)) / (2 * h)
    assert speed == pytest.approx(-3.3e-4, rel=0.05)
    # the last orbit: its amplitude multiplier (the real one next to the trivial) is exp(-2 |speed| (p_H - p) T)
    k = end - 1
    network = build_network(model, operator, {**params, "Iext_e": p[k]})
    mu = np.linalg.eigvals(_dense_monodromy(network, branch.engine["states"][k].ravel(), T[k]))
    real = mu[np.abs(mu.imag) < 1e-10].real
    near = real[np.argsort(np.abs(real - 1))[1]]
    assert near < 1
    assert p_H - p[k] == pytest.approx(-np.log(near) / (2 * abs(speed) * T[k]), rel=0.05)
    assert 0.1 < p_H - p[k] < 1.0 and A[k] < 2.0


def test_a_bracket_without_the_crossing_is_not_located(case):
    """The crossing of NS1 (rows 74, 75) sought between rows 72 and 73: no sign change, located False; and
    from its own rows: the same point as the branch's."""
    model, operator, params, branch = case
    sp = _points(branch, SpecialKind.NS)[0]
    i = sp.index
    D = branch.engine["states"].shape[1] * branch.engine["states"].shape[2]
    mus = branch.engine["multipliers"]
    (crossing,) = [c for c in verify_cycles.multiplier_crossings(mus[i], mus[i + 1])]
    problem = ShootingProblem(model, operator, params, "Iext_e")

    def row(k):
        z = np.concatenate([branch.engine["states"][k].ravel(), [branch["period"][k], branch["Iext_e"][k]]])
        return z, mus[k]

    S = branch.engine["steps_per_period"][i]
    wrong = verify_cycles.Crossing(SpecialKind.NS, *[mus[k][np.argmin(np.abs(mus[k] - crossing.mu_a))]
                                                    for k in (i - 2, i - 1)])
    (result,), _ = verify_cycles.verify_bracket(problem, [SpecialKind.NS], [row(i - 2), row(i - 1)], S,
                                                crossings=[wrong])
    assert not result.ok and "no sign change" in result.reason
    (result,), cost = verify_cycles.verify_bracket(problem, [SpecialKind.NS], [row(i), row(i + 1)], S,
                                                   crossings=[crossing])
    assert result.ok and result.z[D + 1] == pytest.approx(sp.parameters["Iext_e"], abs=1e-9)
    assert 1 <= cost <= 2 * verify_cycles.MAX_EVALUATIONS


def test_multiplier_crossings_pair_the_multipliers():
    """Synthetic spectra: a pair leaving the circle (NS), a real multiplier through -1 (PD), a pair outside
    becoming two real ones outside (no crossing), the trivial multiplier left out."""
    a = np.array([1.0, 0.9 * np.exp(0.5j), 0.9 * np.exp(-0.5j), -0.95, 1.3 * np.exp(0.01j), 1.3 * np.exp(-0.01j), 0.2])
    b = np.array([1.0, 1.1 * np.exp(0.52j), 1.1 * np.exp(-0.52j), -1.05, 1.31, 1.29, 0.21])
    out = verify_cycles.multiplier_crossings(a, b)
    kinds = sorted((c.kind.value, c.direction) for c in out)
    assert kinds == [("NS", "out"), ("PD", "out")]
    assert verify_cycles.net_change(out) == 3
    assert verify_cycles.multiplier_crossings(b, a)[0].direction == "in"


def test_verification_budget_must_be_a_non_negative_integer():
    from bifnet.errors import BifnetError

    for bad in (-1, 2.5):
        with pytest.raises(BifnetError, match="verification_budget"):
            CycleSettings(verification_budget=bad)
    assert CycleSettings(verification_budget=0).verification_budget == 0


def test_a_reversal_is_told_from_a_fold_by_the_orbits_themselves():
    """Synthetic rows (D = 4): along a fold of cycles the parameter turns (p = 1 - (s - 1)^2) while the
    period, means and harmonic amplitudes go on: not a turn back. The orbit before met again, or the same
    orbit with X0 half a period further on (c1 -> -c1, another X0): a turn back. Rows whose |c1|^2 falls
    linearly in p head for the Hopf point where it vanishes, and agree with its normal form there."""
    from bifnet.patterns.cycle_ends import approaching_hopf, normal_form_agrees, turns_back

    D = 4
    q = np.array([1.0, 0.5j, -0.3, 0.2 + 0.1j])

    def row(p, T, A, X0=None, sign=1.0):
        z = np.concatenate([np.zeros(D) if X0 is None else X0, [T, p]])
        return {"z": z, "mean": np.full(D, 0.1 * A), "c1": sign * A * q / np.linalg.norm(q)}

    fold = [row(1 - (s - 1) ** 2, 5 + 0.1 * s, 1 + s) for s in (0.8, 1.0, 1.2)]
    assert not turns_back(*fold, D)
    a, b = row(1.0, 5.0, 1.0), row(1.1, 4.9, 1.2)
    assert turns_back(a, b, a, D)
    assert turns_back(a, b, row(1.0, 5.0, 1.0, X0=np.ones(D), sign=-1.0), D)
    assert not turns_back(a, b, row(1.2, 4.8, 1.4, X0=np.ones(D), sign=-1.0), D)
    # |c1|^2 = (p_H - p) / 0.2 towards p_H = 2
    hopf = [row(p, 4.0, np.sqrt((2.0 - p) / 0.2)) for p in (1.0, 1.4, 1.7)]
    assert approaching_hopf(hopf, D) and not approaching_hopf(hopf[::-1], D)
    end = {"p": 2.0, "speed": -1.0, "omega": 1.0, "l1": -0.2}     # |z|^2 = -speed (p - p_H) / (omega l1)
    assert normal_form_agrees(end, hopf[-1], D) and not normal_form_agrees({**end, "l1": -0.25}, hopf[-1], D)


def _scalar_fold_of_cycles(omega, beta, k):
    """The fold of cycles of the antiphase pattern of two Stuart-Landau nodes coupled through x (each node
    gets ``+k x``, ``k = -eps Lambda``), by a scalar reduction: in polar coordinates
    ``theta' = omega - (k / 2) sin 2 theta`` does not depend on ``r``, so the orbits are the periodic
    solutions of ``d rho / d theta = F = 2 rho (mu + beta rho - rho^2 + k cos^2 theta) / theta'`` (``rho = r^2``),
    all with period ``2 pi / sqrt(omega^2 - k^2 / 4)``; a fold of cycles is a periodic solution whose
    multiplier ``exp(int dF/drho dtheta)`` is 1. The branch of periodic solutions ``mu(rho(0))`` is scanned
    from the Hopf point (``rho(0)`` in steps of 0.05, ``mu`` by Brent's method) to where ``mu`` turns, then
    both conditions are solved by Newton's method with the variational equations (scipy DOP853, rtol 1e-13).
    Returns ``(mu, rho(theta))``."""
    from scipy.integrate import solve_ivp
    from scipy.optimize import brentq

    def field(theta, v, mu):
        w = omega - 0.5 * k * np.sin(2 * theta)
        rho = v[0] if len(v) > 1 else np.exp(v[0])       # alone: log rho
        g = mu + beta * rho - rho**2 + k * np.cos(theta) ** 2
        if len(v) == 1:
            return [2 * g / w]
        f_r, f_rr = 2 * (g + rho * (beta - 2 * rho)) / w, 4 * (beta - 3 * rho) / w
        # rho, int dF/drho, and their derivatives in rho(0) and mu
        return [2 * rho * g / w, f_r, f_r * v[2], f_r * v[3] + 2 * rho / w, f_rr * v[2], f_rr * v[3] + 2 / w]

    def solve(v0, mu, theta=2 * np.pi, rtol=1e-13):
        return solve_ivp(field, (0, theta), v0, args=(mu,), method="DOP853", rtol=rtol, atol=1e-3 * rtol).y[:, -1]

    best = None
    for rho0 in np.arange(0.05, 1.0, 0.05):
        mu = brentq(lambda m: solve([np.log(rho0)], m, rtol=1e-7)[0] - np.log(rho0), -1.0, -k / 2, xtol=1e-5)
        if best is not None and mu > best[1]:
            break
        best = (rho0, mu)
    u = np.array(best)
    for _ in range(10):
        v = solve([u[0], 0.0, 1.0, 0.0, 0.0, 0.0], u[1])
        du = np.linalg.solve([[v[2] - 1, v[3]], [v[4], v[5]]], [u[0] - v[0], -v[1]])
        u = u + du
        if np.max(np.abs(du)) < 1e-13:
            break
    v = solve([u[0], 0.0, 1.0, 0.0, 0.0, 0.0], u[1])
    assert abs(v[0] - u[0]) < 1e-12 and abs(v[1]) < 1e-10
    rho0, mu = u
    return mu, lambda theta: np.exp(solve([np.log(rho0)], mu, theta % (2 * np.pi))[0]) if theta % (2 * np.pi) else rho0


def test_a_fold_whose_multiplier_comes_from_far_outside_the_circle_is_located():
    """Stuart-Landau on 2 nodes (eps = 0.5): the antiphase pattern (mode 2, Lambda = -1) from the subcritical
    transverse Hopf point at mu = -0.25 is unstable with one real multiplier that rises to ~1500 and falls
    back through 1 at a fold of cycles, from 2.53 at the last row before it to 0.17 after; the other
    multipliers stay near 0. The old check took "the multiplier next to the trivial one" at each row (here
    1.5e-8, |1.5e-8 - 1| < |2.53 - 1|, and 0.17) and rejected this genuine fold as "no real multiplier passes
    through 1". The located fold against the scalar reduction (mu to 1e-8; measured 2e-10), the period
    against its closed form, the orbit's antiphase and its rho(theta), a double multiplier 1 there."""
    model = load_model("stuart_landau")
    operator = _random_operator(model, 2, 5)                 # P = [[0, 1], [1, 0]]: Lambda = 1, -1
    eps = 0.5
    params, x = _located(model, operator, model.resolve_parameters({"eps": eps}), "mu", -0.26, -0.24, 2)
    assert params["mu"] == pytest.approx(-eps / 2, abs=1e-12)
    settings = CycleSettings(ds=0.01, ds_max=0.3, max_steps=34, first_amplitude=0.01)
    branch = oscillatory_pattern_branch(model, operator, params, "mu", x, 2, settings)
    (lpc,) = _points(branch, SpecialKind.LPC)
    i = lpc.index
    # the case of the defect: the multiplier through 1 is far from 1 at the row before the fold
    assert branch["max_multiplier"][i] > 2 and branch["n_unstable"][i] == 1 and branch["n_unstable"][i + 1] == 0
    assert lpc.located, lpc.details.get("reason")
    assert lpc.residual < 1e-9
    omega, beta, k = params["omega"], params["beta"], eps        # each node gets -eps Lambda x = +eps x
    mu_fold, rho = _scalar_fold_of_cycles(omega, beta, k)
    assert lpc.parameters["mu"] == pytest.approx(mu_fold, abs=1e-8)
    assert lpc.period == pytest.approx(2 * np.pi / np.sqrt(omega**2 - k**2 / 4), rel=1e-9)
    X0 = branch.engine["verified_orbits"]["LPC1"][:4].reshape(2, 2)
    assert np.allclose(X0[1], -X0[0], rtol=0, atol=1e-9)       # antiphase
    assert X0[0] @ X0[0] == pytest.approx(rho(np.arctan2(X0[0, 1], X0[0, 0])), abs=1e-8)
    near = sorted(lpc.eigenvalues, key=lambda m: abs(m - 1))
    assert abs(near[0] - 1) < 1e-6 and abs(near[1] - 1) < 1e-6    # the trivial multiplier and the fold's


def test_a_real_multiplier_through_one_is_told_by_the_count_above_one():
    """Synthetic spectra (the trivial multiplier at 1 + 1e-10): the fold of the 6-node Stuart-Landau branch
    (2.177 -> 0.575 while 0.025 stays) passes; so do a multiplier from 1500 to 0.17 and one rising through 1
    next to a complex pair; a pair, two real multipliers together, or one moving on the same side of 1 do not."""
    one = 1 + 1e-10
    assert verify_cycles.passes_through_one([2.177, one, 0.0253, 0.016], [one, 0.575, 0.0287, 0.0157])
    assert verify_cycles.passes_through_one([1500.0, one, 1e-5, 0.0], [one, 0.17, 0.0, 0.0])
    assert verify_cycles.passes_through_one([one, 0.9, 0.5 + 0.5j, 0.5 - 0.5j], [one, 1.1, 0.5 + 0.6j, 0.5 - 0.6j])
    assert not verify_cycles.passes_through_one([one, 0.9 * np.exp(0.1j), 0.9 * np.exp(-0.1j)],
                                                [one, 1.1 * np.exp(0.1j), 1.1 * np.exp(-0.1j)])
    assert not verify_cycles.passes_through_one([one, 0.9, 0.95, 0.1], [one, 1.1, 1.05, 0.1])
    assert not verify_cycles.passes_through_one([one, 1.0017, 0.59], [one, 1.0089, 0.59])    # near a Hopf point
    assert not verify_cycles.passes_through_one([one, 0.0253, 0.016], [one, 0.575, 0.0157])


def test_a_fold_takes_one_crossing_of_plus_one_and_a_crossing_without_a_turn_is_a_branch_point():
    """Synthetic rows (trivial multiplier 1 + 1e-10): a real multiplier through +1 where the parameter goes on
    is a BP and no LPC; where the parameter turns, one crossing is the fold's, and a second one between
    the same rows (the count above 1 from 2 to 0) is a BP with a reason, not folded into the LPC."""
    from bifnet.patterns.cycles import _classify

    one = 1 + 1e-10

    def detect(p, spectra):
        mu = [np.array([])] + [np.array(m, dtype=complex) for m in spectra]
        counts = np.array([(0, 0, 0)] + [_classify(m)[2] for m in mu[1:]])
        unstable = counts[:, 0] + counts[:, 1] + 2 * counts[:, 2]
        out = verify_cycles.detect_points(np.array(p), np.full(len(p), 6.0), counts, unstable, mu, "mu")
        return [(sp.kind.value, sp.index, sp.details.get("reason", "")) for sp, _ in out]

    # no turn: 0.8 -> 1.3 between rows 2 and 3
    spectra = [[one, 0.6, 0.1], [one, 0.8, 0.1], [one, 1.3, 0.1], [one, 1.6, 0.1]]
    assert [(k, i) for k, i, _ in detect([0.0, 0.1, 0.2, 0.3, 0.4], spectra)] == [("BP", 2)]
    # a turn at row 3 (mu = 0.35 .. 0.4 .. 0.35), the fold's multiplier alone through +1: one LPC
    spectra = [[one, 3.0, 0.5], [one, 2.0, 0.5], [one, 0.7, 0.5], [one, 0.4, 0.5]]
    assert [(k, i) for k, i, _ in detect([0.0, 0.2, 0.35, 0.4, 0.35], spectra)] == [("LPC", 3)]
    # the same turn with a second multiplier through +1 between rows 2 and 3 (2 above 1 -> none)
    spectra = [[one, 3.0, 1.5], [one, 2.0, 1.2], [one, 0.7, 0.3], [one, 0.4, 0.2]]
    points = detect([0.0, 0.2, 0.35, 0.4, 0.35], spectra)
    assert [(k, i) for k, i, _ in points] == [("BP", 2), ("LPC", 3)]
    assert "besides the fold's own" in points[0][2]
    # a BP through +1 between rows 2 and 3 and the fold's between 3 and 4 (the parameter's vertex at row
    # 3.21): both intervals are half a row from the turning row 3, and the tie went to the BP's interval
    p = [0.0, 0.2, 0.35, 0.40, 0.38, 0.30]
    spectra = [[one, 3.0, 1.5], [one, 2.0, 1.2], [one, 1.5, 0.8], [one, 0.7, 0.6], [one, 0.4, 0.5]]
    assert [(k, i) for k, i, _ in detect(p, spectra)] == [("BP", 2), ("LPC", 3)]
    # mirrored: the vertex at row 2.79, the fold's crossing between rows 2 and 3, the BP's between 3 and 4
    p = [0.0, 0.2, 0.38, 0.40, 0.35, 0.20]
    spectra = [[one, 3.0, 1.5], [one, 2.0, 1.3], [one, 0.7, 1.1], [one, 0.5, 0.9], [one, 0.4, 0.5]]
    assert sorted((k, i) for k, i, _ in detect(p, spectra)) == [("BP", 3), ("LPC", 3)]


def test_the_turn_of_the_parameter_is_the_vertex_of_its_parabola():
    """turn_position: the vertex of p = -(s - s*)^2 over uneven arclengths, and over the row index."""
    from bifnet.continuation.accounting import turn_position

    s = np.array([0.0, 1.0, 2.5, 3.0, 4.0])
    assert turn_position(-(s - 2.2) ** 2, 2, s) == pytest.approx(1 + 1.2 / 1.5, abs=1e-12)
    assert turn_position(-(s - 2.8) ** 2, 2, s) == pytest.approx(2 + 0.3 / 0.5, abs=1e-12)
    assert turn_position(-(np.arange(5.0) - 2.7) ** 2, 3) == pytest.approx(2.7, abs=1e-12)
    assert turn_position([0.0, 1.0, 0.5], 1, [0.0, 1.0, 1.0]) == 1.0      # two rows at one place: the row


def test_a_pattern_fold_takes_the_real_count_change_at_its_vertex():
    """Equilibrium patterns: the real unstable count 2 -> 1 between rows 2 and 3 and 1 -> 0 between 3 and 4,
    the parameter turning at row 3 with its vertex at 3.21 (the fold's eigenvalue through 0 between rows 3
    and 4): the BP is between rows 2 and 3. Mirrored (vertex at 2.79): the BP is between rows 3 and 4."""
    from bifnet.patterns.equilibria import _detected_points

    unstable = np.array([2, 2, 2, 1, 0, 0])
    none = np.zeros(6, dtype=int)
    for p, bp in (([0.0, 0.2, 0.35, 0.40, 0.38, 0.30], 2), ([0.0, 0.2, 0.38, 0.40, 0.35, 0.20], 3)):
        points = _detected_points(np.array(p), unstable, none, None, "mu", -1)
        assert sorted((sp.kind.value, sp.index) for sp in points) == sorted([("BP", bp), ("LP", 3)])


def test_a_fold_of_cycles_next_to_a_row_is_located(tmp_path):
    """The subcritical Stuart-Landau pattern of mode 20 on a sparse 20-node connectome (eps = 0.5) turns at
    a row: the fold lies 2.4e-11 above that row's mu, within what the solves resolve (residuals 1e-9), and
    its check that the parameter turns there (the point beyond both bracketing rows, then to 1e-12) said
    "the parameter does not turn there". Now LPC1 is located, at the branch's least mu (independently: the
    turn of the rows) to 1e-8."""
    import pandas as pd

    from bifnet.runs import execute_run_file

    weights = Path(__file__).parent / "data" / "rand20_sparse.csv"
    run = tmp_path / "sl.toml"
    run.write_text(f'model = "stuart_landau"\nconnectome = "{weights}"\n[parameters]\neps = 0.5\n'
                   '[[steps]]\nname = "tr"\nkind = "transverse"\nfree = ["mu", "eps"]\n'
                   'range = { mu = [-0.5, 0.5], eps = [0.2, 1.0] }\nmodes = "most_negative"\nlevels = [0.5]\n'
                   'cycles = false\n'
                   '[[steps]]\nname = "osc"\nkind = "pattern"\nstart = "tr:HB[mode20]#1"\n'
                   'range = { mu = [-0.5, 0.5] }\nsettings = { ds = 0.02, ds_max = 0.3, max_steps = 47 }\n'
                   'shooting = { first_amplitude = 0.01 }\n')
    out = execute_run_file(run, out=tmp_path / "out")
    points = pd.read_csv(out / "special_points.csv")
    (lpc,) = points[(points["step"] == "osc") & (points["kind"] == "LPC")].itertuples()
    assert lpc.located, lpc.reason
    rows = pd.read_csv(out / "branches.csv")
    mu = rows[rows["step"] == "osc"]["mu"].to_numpy()
    turn = int(np.argmin(mu))
    assert 0 < turn < len(mu) - 1 and abs(lpc.mu - mu[turn]) < 1e-8
