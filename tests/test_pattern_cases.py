"""The two pattern cases of the emergent-patterns issue, checked against independent computations.

1. A subcritical oscillatory pattern (fast): models/stuart_landau.toml (Bautin normal form, inhibitory
   additive coupling) on the random 6-node connectome of test_patterns (seed 5), eps = 0.5. At the
   homogeneous state x = y = 0, J(Lambda) = [[mu - eps Lambda, -omega0], [omega0, mu]] (closed form):
   mode 6 (Lambda = -0.390, the most negative) turns unstable first, through a transverse Hopf point
   at mu_c = eps Lambda_6 / 2 with omega = sqrt(omega0^2 - (eps Lambda_6 / 2)^2) and Re mu' = 1; every
   other mode and the uniform one are stable there. l1 > 0 (checked against the full-dimensional
   Kuznetsov formula), so the pattern branch bends back into mu < mu_c, where the homogeneous state
   is stable, gains stability at a fold of cycles and coexists with the stable homogeneous state.
2. A stationary pattern from a transverse fold of a homogeneous equilibrium of ngnmm_ping on tvb68
   (slow): continuation_runs/stationary_pattern.toml, mode 2 at eps = 28, on the saddle branch
   between the two homogeneous folds; the transverse point is checked against a closed-form
   parametrisation of ngnmm_ping's homogeneous equilibria by r_e.
"""

import numpy as np
import pytest

from bifnet.model import load_model
from bifnet.network import build_network
from bifnet.network.core import network_jacobian_dense, network_rhs
from bifnet.network.integrate import simulate
from bifnet.patterns.cycles import CycleSettings, oscillatory_pattern_branch
from bifnet.patterns.criticality import transverse_normal_form

from test_patterns import _dense_l1, _located, _random_operator

MODE = 6
EPS = 0.5


@pytest.fixture(scope="module")
def subcritical():
    model = load_model("stuart_landau")
    operator = _random_operator(model, 6, 5)
    lam = np.asarray(operator.spectrum().eigenvalues).real
    mu_c = EPS * lam[MODE - 1] / 2
    params, x = _located(model, operator, model.resolve_parameters({"eps": EPS}), "mu", mu_c - 0.01,
                         mu_c + 0.01, MODE)
    settings = CycleSettings(ds=0.004, ds_max=0.3, max_steps=40, first_amplitude=0.01)
    branch = oscillatory_pattern_branch(model, operator, params, "mu", x, MODE, settings)
    return model, operator, params, x, branch, lam


def _first_harmonic(network, X0, T, samples=128):
    res = simulate(network, (0.0, T), X0, method="dopri5", rtol=1e-11, atol=1e-13, dt=T / samples, stride=1)
    assert res.success
    y = res.y.reshape(len(res.t), -1)[:-1]
    return np.linalg.norm(np.exp(-2j * np.pi * np.arange(len(y)) / len(y)) @ (y - y.mean(axis=0)) / len(y))


def test_subcritical_transverse_hopf_point(subcritical):
    """Hopf point and l1 against closed forms and the full-dimensional Kuznetsov formula."""
    model, operator, params, x, branch, lam = subcritical
    omega0 = params["omega"]
    mu_c = EPS * lam[MODE - 1] / 2
    assert params["mu"] == pytest.approx(mu_c, abs=1e-12) and np.all(x == 0)
    # the mode is the first instability: every other mode's growth rate mu_c - eps Lambda / 2 < 0
    others = mu_c - EPS * np.delete(lam, MODE - 1) / 2
    assert np.all(others < -0.02)
    nf = transverse_normal_form(model, operator, params, x, MODE, "HB")
    omega = np.sqrt(omega0**2 - mu_c**2)
    assert nf.omega == pytest.approx(omega, rel=1e-12)
    l1, mu = _dense_l1(model, operator, params, x)
    assert nf.l1 > 0 and nf.criticality == "sub"
    assert nf.l1 == pytest.approx(l1, rel=1e-8)
    assert abs(mu - 1j * omega) < 1e-10


def test_subcritical_branch_bends_back_with_the_predicted_amplitude(subcritical):
    """z' = (i omega + mu' dp) z + omega l1 |z|^2 z with mu' = 1: orbits exist for dp < 0 with
    first-harmonic norm sqrt(-dp / (omega l1)); the amplitude from the network integrator (DOPRI5)."""
    model, operator, params, x, branch, lam = subcritical
    nf = transverse_normal_form(model, operator, params, x, MODE, "HB")
    mu_c = params["mu"]
    assert np.all(branch["mu"][1:10] < mu_c)            # the other side of the Hopf point: subcritical
    checked = 0
    for k in range(1, 6):
        dp = branch["mu"][k] - mu_c
        network = build_network(model, operator, {**params, "mu": branch["mu"][k]})
        amplitude = _first_harmonic(network, branch.engine["states"][k].ravel(), branch["period"][k])
        assert amplitude == pytest.approx(branch["amplitude"][k], rel=1e-6)
        if amplitude < 0.05:
            assert amplitude == pytest.approx(np.sqrt(-dp / (nf.omega * nf.l1)), rel=0.05)
            checked += 1
        # small orbits are unstable: one real multiplier outside the unit circle
        assert branch["stable"][k] == 0 and branch["n_unstable"][k] == 1
    assert checked >= 3
    assert branch["period"][1] == pytest.approx(2 * np.pi / nf.omega, rel=1e-5)


def _fold(branch):
    mu = branch["mu"]
    k = next(i for i in range(2, len(mu) - 1) if mu[i] < mu[i - 1] and mu[i] < mu[i + 1])
    return k


def test_fold_of_cycles_and_coexistence_with_the_stable_homogeneous_state(subcritical):
    """The branch turns (LPC) at mu ~ -0.288 where it gains stability; past the fold a stable
    pattern coexists with the homogeneous state, which is stable there (mu < mu_c). A simulation
    (RK4) from the pattern orbit stays on it; one from the homogeneous state plus 1e-3 along the
    mode decays; one from a small unstable orbit scaled by 1 -+ 1e-3 leaves it (inwards to rest,
    outwards to a large oscillation)."""
    from bifnet.network import homogeneous_initial_state

    model, operator, params, x, branch, lam = subcritical
    k = _fold(branch)
    assert branch["mu"][k] == pytest.approx(-0.288, abs=2e-3)
    lpc = [sp for sp in branch.special_points if sp.kind.value == "LPC"]
    assert lpc and abs(lpc[0].parameters["mu"] - branch["mu"][k]) < 5e-3
    assert branch["stable"][k - 1] == 0 and branch["stable"][k + 1] == 1
    # the stable orbit past the fold, checked with an independent monodromy estimate: perturbations decay
    j = k + 1
    p = {**params, "mu": float(branch["mu"][j])}
    assert p["mu"] < params["mu"]                         # the homogeneous state is stable here
    network = build_network(model, operator, p)
    J0 = network_jacobian_dense(network, np.zeros(12))
    assert np.max(np.linalg.eigvals(J0).real) < 0
    T = branch["period"][j]
    X0 = branch.engine["states"][j].ravel()
    rng = np.random.default_rng(1)
    res = simulate(network, (0.0, 60 * T), X0 + 1e-3 * rng.standard_normal(12), method="rk4", dt=T / 2000,
                   stride=2000)
    assert res.success
    last = res.y[-1].ravel()
    # back on the orbit: the distance of the end state from the orbit's samples
    orbit = simulate(network, (0.0, T), X0, method="dopri5", rtol=1e-11, atol=1e-13, dt=T / 400, stride=1)
    distance = np.min(np.linalg.norm(orbit.y.reshape(len(orbit.t), -1) - last, axis=1))
    assert distance < 2e-3
    # the homogeneous state attracts small perturbations at the same mu
    y0 = homogeneous_initial_state(network, np.zeros(2), "mode", amplitude=1e-3, mode=MODE)
    res = simulate(network, (0.0, 60 * T), y0, method="rk4", dt=T / 2000, stride=2000)
    assert np.max(np.abs(res.y[-1])) < 1e-6
    # the small-amplitude pattern is unstable: a simulation from it does not stay near it (the first orbit
    # with a multiplier above 1.3: row 6, max |X| = 0.087)
    i = int(np.argmax(branch["max_multiplier"][1:] > 1.3)) + 1
    assert i < k and np.max(np.abs(branch.engine["states"][i])) < 0.1
    p5 = {**params, "mu": float(branch["mu"][i])}
    network5 = build_network(model, operator, p5)
    X5, T5 = branch.engine["states"][i].ravel(), branch["period"][i]
    res = simulate(network5, (0.0, 60 * T5), X5 * (1 - 1e-3), method="rk4", dt=T5 / 2000, stride=2000)
    assert np.max(np.abs(res.y[-1])) < 1e-2 * np.max(np.abs(X5))      # inwards: towards the homogeneous state
    res = simulate(network5, (0.0, 60 * T5), X5 * (1 + 1e-3), method="rk4", dt=T5 / 2000, stride=2000)
    assert np.max(np.abs(res.y[-1])) > 2 * np.max(np.abs(X5))         # outwards: to a large oscillation


def test_hysteresis_by_simulation(subcritical):
    """Raise mu just past the Hopf point: a 1e-3 perturbation of the homogeneous state does not settle
    on a small pattern (the small orbits are on the other side) but jumps to a large oscillation; lower
    mu back below the Hopf point, where the homogeneous state is stable: the network stays oscillating
    (hysteresis), at amplitudes well above those of the unstable small-amplitude orbits there."""
    from bifnet.network import homogeneous_initial_state

    model, operator, params, x, branch, lam = subcritical
    mu_c = params["mu"]
    network = build_network(model, operator, {**params, "mu": mu_c + 0.01})
    y = homogeneous_initial_state(network, np.zeros(2), "mode", amplitude=1e-3, mode=MODE)
    res = simulate(network, (0.0, 1500.0), y, method="rk4", dt=0.02, stride=50)
    assert res.success
    half_up = 0.5 * np.ptp(res.y[-200:, :, 0], axis=0)
    assert np.all(half_up > 0.8)                          # a large oscillation in every region
    mu_down = mu_c - 0.1
    network = build_network(model, operator, {**params, "mu": mu_down})
    res = simulate(network, (0.0, 1500.0), res.y[-1].ravel(), method="rk4", dt=0.02, stride=50)
    half_down = 0.5 * np.ptp(res.y[-200:, :, 0], axis=0)
    assert np.all(half_down > 0.8)
    # the same mu from rest stays at rest
    y = homogeneous_initial_state(network, np.zeros(2), "mode", amplitude=1e-3, mode=MODE)
    res = simulate(network, (0.0, 1500.0), y, method="rk4", dt=0.02, stride=50)
    assert np.max(np.abs(res.y[-1])) < 1e-6


def _ping_equilibrium(model, params, r_e):
    """The homogeneous equilibrium of ngnmm_ping with rate r_e, in closed form up to one monotone root:
    s = r, v = -Delta / (2 pi tau r); the I equation is strictly decreasing in r_i > 0 (one root, brentq);
    the E equation then gives Iext_e explicitly. Returns (Iext_e, x)."""
    from scipy.optimize import brentq

    p = params
    te, ti = p["tau_e"], p["tau_i"]
    v_e = -p["Delta_e"] / (2 * np.pi * te * r_e)

    def g(r_i):
        v_i = -p["Delta_i"] / (2 * np.pi * ti * r_i)
        return (v_i**2 + p["nu_i"] - (np.pi * ti * r_i) ** 2 + p["Iext_i"] + ti * p["J_ie"] * r_e
                - ti * p["J_ii"] * r_i + ti * p["eps"] * r_e)

    r_i = brentq(g, 1e-9, 10.0, xtol=1e-16, rtol=1e-15)
    v_i = -p["Delta_i"] / (2 * np.pi * ti * r_i)
    iext = -(v_e**2 + p["nu_e"] - (np.pi * te * r_e) ** 2 + te * p["J_ee"] * r_e - te * p["J_ei"] * r_i
             + te * p["eps"] * r_e)
    return iext, np.array([r_e, v_e, r_e, r_i, v_i, r_i])


def _det_roots(model, params, Lambda, brackets):
    from scipy.optimize import brentq

    from bifnet.patterns.criticality import _mode_matrices

    def det(r_e):
        iext, x = _ping_equilibrium(model, params, r_e)
        A, B = _mode_matrices(model, x, {**params, "Iext_e": iext})
        return np.linalg.det(A + Lambda * B)

    roots = [brentq(det, a, b, xtol=1e-15) for a, b in brackets]
    return [_ping_equilibrium(model, params, r) for r in roots]


def test_hidden_transverse_folds_on_the_saddle_branch():
    """ngnmm_ping at eps = 28, Lambda = 0.918 (tvb68's mode 2): the growth rate is positive all along the
    saddle branch, but det J(Lambda) changes sign twice there; hidden_fold_crossings finds both on an
    AUTO branch and locate_transverse_point(kind="LP") solves them, against the closed-form equilibria."""
    from bifnet.continuation.equilibria import continue_equilibria, find_equilibrium
    from bifnet.continuation.settings import ContinuationSettings
    from bifnet.patterns.criticality import locate_transverse_point
    from bifnet.transverse.curves import find_crossings, growth_table, hidden_fold_crossings

    model = load_model("ngnmm_ping")
    params = model.resolve_parameters({"eps": 28.0})
    Lambda = 0.917941307136946
    expected = sorted(_det_roots(model, params, Lambda, ((0.053, 0.06), (0.09, 0.1))), key=lambda e: e[0])
    branch = continue_equilibria(model, {**params, "Iext_e": 2.0}, "Iext_e", settings=ContinuationSettings(
        ds=0.05, ds_max=0.25, bounds={"Iext_e": (2.0, 6.0)}))
    rates, freqs = growth_table(model, branch, [Lambda])
    assert not [c for c in find_crossings(branch, rates, freqs, [Lambda], 28.0) if c.kind.value == "LP"]
    hidden = hidden_fold_crossings(model, branch, rates, [Lambda], 28.0)
    assert len(hidden) == 2 and {c.kind.value for c in hidden} == {"LP"}
    for c, (iext, x_exact) in zip(sorted(hidden, key=lambda c: c.value), expected):
        assert c.value == pytest.approx(iext, abs=0.02)           # interpolated between branch points
        i = c.index
        row = lambda k: np.array([branch[v][k] for v in branch.variables])  # noqa: E731
        value, x = locate_transverse_point(model, params, "Iext_e", Lambda,
                                           (branch["Iext_e"][i], branch["Iext_e"][i + 1]), (row(i), row(i + 1)),
                                           "LP")
        assert value == pytest.approx(iext, abs=1e-9)
        assert np.allclose(x, x_exact, atol=1e-8)
    # without kind the growth rate does not change sign: refused with a clear error
    from bifnet.errors import BifnetError

    c = hidden[0]
    with pytest.raises(BifnetError, match="does not change sign"):
        locate_transverse_point(model, params, "Iext_e", Lambda,
                                (branch["Iext_e"][c.index], branch["Iext_e"][c.index + 1]),
                                (find_equilibrium(model, {**params, "Iext_e": branch["Iext_e"][c.index]},
                                                  np.array([branch[v][c.index] for v in branch.variables]),
                                                  settle_time=0.0),
                                 np.array([branch[v][c.index + 1] for v in branch.variables])))


@pytest.mark.slow
def test_stationary_pattern_from_a_transverse_fold_of_tvb68(tmp_path):
    """continuation_runs/stationary_pattern.toml (ngnmm_ping, tvb68, eps = 28; ~40 s): the two zero
    eigenvalues of J(Lambda_2) on the saddle branch (a closed-form root of det J(Lambda_2) along the
    equilibria parametrised by r_e), the transcritical branch point (the branch's slope dp/dy against
    -a2 / nu', nu' from the dense full-network Jacobian), residuals, stability (eigenvalues of a
    finite-difference network Jacobian) and a full-network Newton solve (scipy) back onto the pattern."""
    from pathlib import Path

    import pandas as pd
    import xarray as xr
    from scipy.optimize import brentq, root

    from bifnet.connectome import coupling_operator, load_connectome
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.patterns.criticality import _mode_matrices
    from bifnet.runs import execute_run_file

    path = Path(__file__).resolve().parent.parent / "continuation_runs" / "stationary_pattern.toml"
    out = execute_run_file(path, out=tmp_path / "out")
    model = load_model("ngnmm_ping")
    operator = coupling_operator(load_connectome("tvb68"), model.coupling)
    lam2 = float(np.sort(np.asarray(operator.spectrum().eigenvalues).real)[-2])
    params = model.resolve_parameters({"eps": 28.0})

    def det2(r_e):
        iext, x = _ping_equilibrium(model, params, r_e)
        A, B = _mode_matrices(model, x, {**params, "Iext_e": iext})
        return np.linalg.det(A + lam2 * B)

    # both zero eigenvalues of J(Lambda_2) lie between the two homogeneous folds (r_e in 0.05 - 0.12)
    roots = [brentq(det2, a, b, xtol=1e-15) for a, b in ((0.053, 0.06), (0.09, 0.1))]
    expected = sorted(_ping_equilibrium(model, params, r)[0] for r in roots)
    points = pd.read_csv(out / "transverse_points.csv")
    lp = points[(points["kind"] == "LP") & (points["mode"] == 2)].sort_values("Iext_e_located")
    assert len(lp) == 2 and set(lp["criticality"]) == {"transcritical"}
    assert not lp["homogeneous_stable"].any()
    assert np.allclose(lp["Iext_e_located"], expected, atol=1e-9)
    # the pattern branch
    table = pd.read_csv(out / "branches.csv")
    rows = table[table["step"] == "pat"].reset_index(drop=True)
    assert len(rows) == 61 and rows["residual"].max() < 1e-8 and set(rows["mode"]) == {2}
    profiles = xr.open_dataset(out / "pattern_pat.nc")
    states = profiles["mean"].values
    profiles.close()
    p = rows["Iext_e"].to_numpy()
    y = rows["pattern_amplitude"].to_numpy()
    bp = int(np.argmin(np.abs(y)))
    p_c = float(p[bp])
    assert p_c == pytest.approx(expected[0], abs=1e-9)
    # transcritical: the branch crosses the branch point, y of both signs, p - p_c = -a2 y / nu'
    a2 = float(lp["nf_quadratic"].iloc[0])
    r_c = roots[int(np.argmin([abs(_ping_equilibrium(model, params, r)[0] - p_c) for r in roots]))]
    x_c = _ping_equilibrium(model, params, r_c)[1]
    h = 1e-5
    nu = []
    for s in (-1, 1):
        ps = {**params, "Iext_e": p_c + s * h}
        xs = find_equilibrium(model, ps, x_c, settle_time=0.0)
        ev = np.linalg.eigvals(network_jacobian_dense(build_network(model, operator, ps), np.tile(xs, 68)))
        nu.append(ev[np.argmin(np.abs(ev))].real)
    speed = (nu[1] - nu[0]) / (2 * h)
    near = np.flatnonzero((np.abs(y) > 0) & (np.abs(y) < 0.06) & (np.abs(np.arange(len(y)) - bp) <= 4))
    assert np.any(y[near] > 0) and np.any(y[near] < 0) and len(near) >= 4
    # p - p_c = c1 y + c2 y^2 (least squares over the points next to the branch point): c1 = -a2 / nu'
    c1, _ = np.linalg.lstsq(np.column_stack([y[near], y[near] ** 2]), p[near] - p_c, rcond=None)[0]
    assert c1 == pytest.approx(-a2 / speed, rel=0.05)
    # stability: eigenvalues of a central-difference Jacobian of the network field at two points
    for k in (bp + 3, len(rows) - 1):
        network = build_network(model, operator, {**params, "Iext_e": float(p[k])})
        X = states[k].ravel()
        D = X.size
        step = 1e-7 * np.maximum(1.0, np.abs(X))
        J = np.column_stack([(network_rhs(network, X + step[j] * np.eye(D)[j])
                              - network_rhs(network, X - step[j] * np.eye(D)[j])) / (2 * step[j]) for j in range(D)])
        ev = np.linalg.eigvals(J)
        unstable = int(np.sum(ev.real > 1e-6 * max(1.0, np.max(np.abs(ev)))))
        assert unstable == rows["n_unstable"][k] and rows["stable"][k] == (unstable == 0)
        assert unstable > 50
        # a full-network Newton-type solve (MINPACK hybrd) from a perturbed pattern lands back on it
        rng = np.random.default_rng(k)
        sol = root(lambda Z: network_rhs(network, Z), X + 1e-4 * rng.standard_normal(D) * np.abs(X), tol=1e-13)
        assert sol.success and np.max(np.abs(network_rhs(network, sol.x))) < 1e-10
        assert np.max(np.abs(sol.x - X)) < 1e-7
        assert np.ptp(sol.x.reshape(68, 6)[:, 1]) > 0.01          # a pattern: the regions differ


def test_shipped_stationary_run_file_is_valid():
    """continuation_runs/stationary_pattern.toml passes the up-front checks (schema, model, connectome)."""
    from pathlib import Path

    from bifnet.connectome import load_connectome
    from bifnet.runs import check_run, load_run_file

    path = Path(__file__).resolve().parent.parent / "continuation_runs" / "stationary_pattern.toml"
    run = load_run_file(path)
    check_run(run, load_model("ngnmm_ping"), load_connectome("tvb68"))
    assert run.steps[1]["kind"] == "pattern" and run.steps[1]["start"] == "tr:LP[mode2]#1"


@pytest.mark.slow
def test_subcritical_pattern_of_tvb68_with_hysteresis(tmp_path):
    """continuation_runs/subcritical_pattern.toml (stuart_landau on tvb68, 136 dimensions, ~20 s):
    the Hopf point at the closed form mu_c = eps Lambda_68 / 2, l1 > 0, a branch bending back with the
    predicted amplitude, one fold of cycles, then stable large orbits that coexist with the stable rest
    state; RK4 simulations at one mu between the fold and the Hopf point: from the branch's stable orbit
    the network stays oscillating (per-region half-range as on the branch), from rest it stays at rest."""
    from pathlib import Path

    import pandas as pd

    from bifnet.connectome import coupling_operator, load_connectome
    from bifnet.network import homogeneous_initial_state
    from bifnet.runs import execute_run_file

    path = Path(__file__).resolve().parent.parent / "continuation_runs" / "subcritical_pattern.toml"
    out = execute_run_file(path, out=tmp_path / "out")
    model = load_model("stuart_landau")
    operator = coupling_operator(load_connectome("tvb68"), model.coupling)
    lam = float(np.min(np.asarray(operator.spectrum().eigenvalues).real))
    params = model.resolve_parameters({"eps": 0.5})
    mu_c = 0.5 * lam / 2
    omega = np.sqrt(params["omega"] ** 2 - mu_c**2)
    points = pd.read_csv(out / "transverse_points.csv")
    hb = points[(points["kind"] == "HB") & (points["mode"] == 68)]
    assert len(hb) == 1 and hb["criticality"].iloc[0] == "sub" and float(hb["l1"].iloc[0]) > 0
    assert float(hb["mu_located"].iloc[0]) == pytest.approx(mu_c, abs=1e-10)
    assert float(hb["frequency_hz_located"].iloc[0]) == pytest.approx(omega / (2 * np.pi) * 1000, rel=1e-10)
    l1 = float(hb["l1"].iloc[0])
    rows = pd.read_csv(out / "branches.csv")
    rows = rows[rows["step"] == "osc"].reset_index(drop=True)
    mu = rows["mu"].to_numpy()
    # bends back: mu < mu_c, amplitude sqrt(-(mu - mu_c) / (omega l1)) (Re mu' = 1) close to the point
    assert np.all(mu[1:30] < mu_c)
    for k in range(1, 4):
        assert rows["amplitude"][k] == pytest.approx(np.sqrt(-(mu[k] - mu_c) / (omega * l1)), rel=0.05)
    # one turning point (LPC), where the orbits become stable
    turns = [k for k in range(1, len(mu) - 1) if (mu[k] - mu[k - 1]) * (mu[k + 1] - mu[k]) < 0]
    assert len(turns) == 1
    k = turns[0]
    assert mu[k] == pytest.approx(-0.393, abs=2e-3)
    assert not rows["stable"][1:k].any() and rows["stable"][k + 1:].all()
    special = pd.read_csv(out / "special_points.csv")
    (lpc,) = special[(special["step"] == "osc") & (special["name"] == "LPC1")].itertuples()
    # located (the multiplier through 1 is 2.13 at the row before the fold, farther from 1 than another one)
    assert lpc.located and lpc.residual < 1e-9
    assert lpc.mu <= mu[k] and lpc.mu == pytest.approx(mu[k], abs=1e-3)
    assert mu[-1] > mu_c                                   # the stable large branch passes the Hopf point
    # hysteresis: at a stable orbit between the fold and the Hopf point
    j = int(np.argmin(np.abs(mu[k + 1:] - (-0.30)))) + k + 1
    assert mu[k] < mu[j] < mu_c and rows["stable"][j]
    # the same branch from the API (the orbits' states are in engine["states"]), then simulations
    x0 = np.zeros(2)
    branch = oscillatory_pattern_branch(model, operator, {**params, "mu": float(hb["mu_located"].iloc[0])}, "mu",
                                        x0, 68, CycleSettings(ds=0.02, ds_max=0.3, max_steps=47,
                                                              first_amplitude=0.01))
    m2 = branch["mu"]
    k2 = next(i for i in range(1, len(m2) - 1) if (m2[i] - m2[i - 1]) * (m2[i + 1] - m2[i]) < 0)
    assert m2[k2] == pytest.approx(mu[k], abs=2e-3)             # the same fold (sampled, not located)
    j = int(np.argmin(np.abs(m2[k2 + 1:] - (-0.30)))) + k2 + 1
    assert m2[k2] < m2[j] < mu_c and branch["stable"][j] == 1
    network = build_network(model, operator, {**params, "mu": float(m2[j])})
    T = branch["period"][j]
    X0 = branch.engine["states"][j].ravel()
    rng = np.random.default_rng(2)
    res = simulate(network, (0.0, 40 * T), X0 + 1e-2 * rng.standard_normal(X0.size) * np.abs(X0).max(),
                   method="rk4", dt=T / 1000, stride=10)
    assert res.success
    tail = res.y[-200:, :, 0]                                     # the last two periods
    half = branch.engine["half_range"][j, :, 0]
    assert np.allclose(0.5 * np.ptp(tail, axis=0), half, rtol=0.01, atol=1e-3)
    rest = homogeneous_initial_state(network, np.zeros(2), "mode", amplitude=1e-3, mode=68)
    res = simulate(network, (0.0, 40 * T), rest, method="rk4", dt=T / 1000, stride=10)
    assert np.max(np.abs(res.y[-1])) < 1e-4


def test_shipped_subcritical_run_file_is_valid():
    from pathlib import Path

    from bifnet.connectome import load_connectome
    from bifnet.runs import check_run, load_run_file

    path = Path(__file__).resolve().parent.parent / "continuation_runs" / "subcritical_pattern.toml"
    run = load_run_file(path)
    check_run(run, load_model("stuart_landau"), load_connectome("tvb68"))
    assert run.steps[1]["start"] == "tr:HB[mode68]#1"
