"""LPC and NS points of oscillatory patterns (bifnet.patterns.verify_cycles), checked against independent
computations: the Floquet multipliers of a monodromy integrated from the dense network Jacobian's
variational equation (scipy DOP853 at rtol 1e-11: neither bifnet's RK4 map nor its tangent kernels), the
orbit's return under the network integrator (DOPRI5), and the rows of the branch around the points.

The case: the 6-node network of test_pattern_cycles (ngnmm_ping, eps = 15, mode 6) continued further, to
Iext_e = 49: three complex pairs leave the unit circle at Iext_e = 46.97, 47.51, 47.91 (torus points of
a stable, then unstable pattern); at Iext_e = 49.033 the continuation turns back without a fold (no
multiplier through 1: the LPC it reports is rejected) and runs over the same orbits again (the second set
of torus points equals the first: reported as such, not as new points).
"""

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
        (crossing,) = verify_cycles.multiplier_crossings(mus[i], mus[i + 1])
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


def test_the_branch_running_back_meets_the_same_torus_points(case):
    _, _, _, branch = case
    ns = {sp.name: sp for sp in _points(branch, SpecialKind.NS)}
    for later, earlier in (("NS4", "NS3"), ("NS5", "NS2"), ("NS6", "NS1")):
        sp = ns[later]
        assert not sp.located and f"the same point as {earlier}" in sp.details["reason"]
        assert sp.details["direction"] == "in"


def test_a_turning_point_without_a_multiplier_through_1_is_not_a_fold(case):
    """The continuation turns back at row 82 (Iext_e = 49.033) and runs over the same orbits again. The
    tangent's parameter component changes sign between rows 81 and 82, but no real multiplier passes through
    1 there: by the independent monodromy the multiplier next to the trivial one is 0.9997 at both rows
    (a fold would need it on both sides of 1), so the LPC is reported and not located."""
    model, operator, params, branch = case
    (sp,) = _points(branch, SpecialKind.LPC)
    assert not sp.located and "no real multiplier passes through 1" in sp.details["reason"]
    i = sp.index
    D = branch.engine["states"].shape[1] * branch.engine["states"].shape[2]
    second = []
    for k in (i - 1, i):
        network = build_network(model, operator, {**params, "Iext_e": branch["Iext_e"][k]})
        mu = np.linalg.eigvals(_dense_monodromy(network, branch.engine["states"][k].ravel(), branch["period"][k]))
        mu = mu[np.argsort(np.abs(mu - 1))]
        assert abs(mu[0] - 1) < 1e-6                      # the trivial multiplier
        second.append(mu[1])
    assert all(abs(m.imag) < 1e-10 and 0.999 < m.real < 1 - 1e-4 for m in second), second
    # the amplitude keeps falling to row 82 and rises again after it: the same orbits met again
    amplitude = branch["amplitude"]
    assert amplitude[i] < amplitude[i - 1] and amplitude[i + 1] > amplitude[i]
    assert amplitude[i + 1] == pytest.approx(amplitude[i - 2], rel=0.02)


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
