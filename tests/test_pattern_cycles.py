"""Oscillatory patterns (bifnet.patterns.cycles): periodic orbits of the full network continued from a
transverse Hopf point by shooting, checked against independent computations: the network integrator
(adaptive DOPRI5 at tight tolerances), the full-dimensional Kuznetsov l1 and eigenvalue speed of the
dense network Jacobian, a monodromy matrix from the dense Jacobian's variational equation (scipy), and
a plain simulation of the network from the homogeneous state.

The case: ngnmm_ping, eps = 15, a random 6-node connectome (seed 5 of test_patterns), mode 6
(Lambda = -0.39) turns unstable first, through a supercritical transverse Hopf point at Iext_e = 16.606
(every other mode stable there), so the oscillatory pattern born there is stable.
"""

import numpy as np
import pytest

from bifnet.model import load_model
from bifnet.network import build_network
from bifnet.network.core import network_jacobian_dense, network_rhs
from bifnet.network.integrate import simulate
from bifnet.patterns.cycles import CycleSettings, oscillatory_pattern_branch

from test_patterns import _located, _random_operator

MODE = 6


@pytest.fixture(scope="module")
def case():
    model = load_model("ngnmm_ping")
    operator = _random_operator(model, 6, 5)
    params, x = _located(model, operator, model.resolve_parameters({"eps": 15.0}), "Iext_e", 16.5, 17.0, MODE)
    settings = CycleSettings(ds=0.02, ds_max=1.0, max_steps=40, first_amplitude=0.01)
    branch = oscillatory_pattern_branch(model, operator, params, "Iext_e", x, MODE, settings)
    return model, operator, params, x, branch


def _orbit(network, X0, T, samples=128):
    """One period of the network integrator (DOPRI5, rtol 1e-11) sampled at ``samples`` times."""
    res = simulate(network, (0.0, T), X0, method="dopri5", rtol=1e-11, atol=1e-13, dt=T / samples, stride=1)
    assert res.success
    return res.y.reshape(len(res.t), -1)


def test_every_orbit_returns_under_the_network_integrator(case):
    model, operator, params, _, branch = case
    states = branch.engine["states"]
    assert len(branch) == 42 and branch.status == "max_steps"
    for k in range(1, len(branch)):
        network = build_network(model, operator, {**params, "Iext_e": branch["Iext_e"][k]})
        y = _orbit(network, states[k].ravel(), branch["period"][k], samples=1)
        error = np.max(np.abs(y[-1] - y[0]))
        assert error < 1e-6, (k, error)
        assert branch["return_error"][k] < 1e-6
    # a genuine oscillation, growing along the branch
    assert np.all(np.diff(branch["amplitude"]) > 0) and branch["amplitude"][-1] > 5


def _critical_speed(model, operator, params, x, omega, h=1e-5):
    """d Re(mu) / d Iext_e of the pair closest to i omega of the dense full-network Jacobian."""
    from bifnet.continuation.equilibria import find_equilibrium

    values = []
    for s in (-1, 1):
        p = {**params, "Iext_e": params["Iext_e"] + s * h}
        xs = find_equilibrium(model, p, x, settle_time=0.0)
        network = build_network(model, operator, p)
        ev = np.linalg.eigvals(network_jacobian_dense(network, np.tile(xs, network.n_regions)))
        values.append(ev[np.argmin(np.abs(ev - 1j * omega))].real)
    return (values[1] - values[0]) / (2 * h)


def test_amplitude_grows_like_the_square_root_predicted_by_l1(case):
    """Hopf normal form z' = (i omega + mu' dp) z + omega l1 |z|^2 z with X = X* + 2 Re(z Q), |Q| = 1:
    the first harmonic of the orbit has norm |z| = sqrt(-mu' dp / (omega l1)), and the multiplier of
    the amplitude is exp(-2 mu' dp T). omega and mu' from the
    dense network Jacobian; l1 from the mode reduction (equal to the full-dimensional Kuznetsov formula to
    1e-8 in test_patterns; _dense_l1 itself takes 7 s here), the amplitude from the network integrator."""
    from bifnet.patterns.criticality import transverse_normal_form

    model, operator, params, x, branch = case
    l1 = transverse_normal_form(model, operator, params, x, MODE, "HB").l1
    network = build_network(model, operator, params)
    ev = np.linalg.eigvals(network_jacobian_dense(network, np.tile(x, network.n_regions)))
    omega = float(ev[np.argmin(np.abs(ev.real) + (ev.imag <= 0))].imag)
    speed = _critical_speed(model, operator, params, x, omega)
    assert l1 < 0 and speed > 0
    checked = checked_multiplier = 0
    for k in range(1, 8):
        dp = branch["Iext_e"][k] - params["Iext_e"]
        network = build_network(model, operator, {**params, "Iext_e": branch["Iext_e"][k]})
        y = _orbit(network, branch.engine["states"][k].ravel(), branch["period"][k])[:-1]
        c1 = np.exp(-2j * np.pi * np.arange(len(y)) / len(y)) @ (y - y.mean(axis=0)) / len(y)
        amplitude = np.linalg.norm(c1)
        assert amplitude == pytest.approx(branch["amplitude"][k], rel=1e-6)
        if amplitude < 0.15:   # close to the Hopf point
            assert amplitude == pytest.approx(np.sqrt(-speed * dp / (omega * l1)), rel=0.05)
            # the amplitude's multiplier: r' = -2 mu' dp (r - r*) on the circle, so exp(-2 mu' dp T)
            # (where it is well apart from the trivial one: two multipliers within 1e-6 of 1 are ill-conditioned)
            mu = branch.engine["multipliers"][k]
            near = np.sort(np.abs(mu[np.abs(mu.imag) < 1e-12].real - 1))
            expected = 1 - np.exp(-2 * speed * dp * branch["period"][k])
            if expected > 1e-6:
                assert near[1] == pytest.approx(expected, rel=0.05)
                checked_multiplier += 1
            checked += 1
    assert checked >= 3 and checked_multiplier >= 2
    # the period tends to 2 pi / omega
    assert branch["period"][1] == pytest.approx(2 * np.pi / omega, rel=1e-4)


def _dense_monodromy(network, X0, T):
    """Monodromy of the orbit from the dense network Jacobian's variational equation (scipy DOP853)."""
    from scipy.integrate import solve_ivp

    D = X0.size

    def rhs(t, u):
        X = u[:D]
        V = u[D:].reshape(D, D)
        return np.concatenate([network_rhs(network, X), (network_jacobian_dense(network, X) @ V).ravel()])

    sol = solve_ivp(rhs, (0.0, T), np.concatenate([X0, np.eye(D).ravel()]), method="DOP853", rtol=1e-11,
                    atol=1e-12)
    assert sol.success
    return sol.y[D:, -1].reshape(D, D)


def test_multipliers_against_the_full_network_jacobian(case):
    model, operator, params, _, branch = case
    k = int(np.argmax(branch["amplitude"] > 0.4))     # amplitude multiplier well apart from the trivial one
    network = build_network(model, operator, {**params, "Iext_e": branch["Iext_e"][k]})
    X0 = branch.engine["states"][k].ravel()
    M = _dense_monodromy(network, X0, branch["period"][k])
    ev, V = np.linalg.eig(M)
    j = int(np.argmin(np.abs(ev - 1)))
    assert abs(ev[j] - 1) < 1e-6
    f = network_rhs(network, X0)
    cosine = abs(np.real(V[:, j]) @ f) / (np.linalg.norm(np.real(V[:, j])) * np.linalg.norm(f))
    assert cosine > 1 - 1e-6                       # the trivial multiplier's eigenvector is the flow direction
    assert branch["trivial_error"][k] < 1e-6
    reference = ev[np.argsort(-np.abs(ev))]
    engine = branch.engine["multipliers"][k]
    assert np.allclose(np.sort_complex(engine[:8]), np.sort_complex(reference[:8]), atol=1e-6)
    others = np.delete(ev, j)
    assert branch["max_multiplier"][k] == pytest.approx(np.max(np.abs(others)), abs=1e-6)
    assert (branch["stable"][k] == 1) == bool(np.all(np.abs(others) < 1))


def test_krylov_method_agrees_with_the_monodromy_method(case):
    model, operator, params, x, branch = case
    settings = CycleSettings(ds=0.02, ds_max=1.0, max_steps=3, first_amplitude=0.01, method="krylov", multipliers=6)
    krylov = oscillatory_pattern_branch(model, operator, params, "Iext_e", x, MODE, settings)
    assert krylov["Iext_e"][1] == pytest.approx(branch["Iext_e"][1], abs=1e-9)
    assert krylov["period"][1] == pytest.approx(branch["period"][1], rel=1e-8)
    mu_k = krylov.engine["multipliers"][1]
    mu_d = branch.engine["multipliers"][1][:6]
    assert np.allclose(np.sort(np.abs(mu_k)), np.sort(np.abs(mu_d)), atol=1e-7)
    assert np.all(krylov["return_error"][1:] < 1e-6)


def test_a_simulation_from_the_homogeneous_state_reaches_the_stable_pattern(case):
    """The last (stable) orbit, Iext_e = 24.73: the network integrator started from the homogeneous
    equilibrium plus 1e-3 along mode 6 settles on it (period and per-region amplitude)."""
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.network import homogeneous_initial_state

    model, operator, params, x, branch = case
    k = len(branch) - 1
    assert branch["stable"][k] == 1 and branch["max_multiplier"][k] < 0.97
    p = {**params, "Iext_e": branch["Iext_e"][k]}
    xh = find_equilibrium(model, p)
    network = build_network(model, operator, p)
    y0 = homogeneous_initial_state(network, xh, "mode", amplitude=1e-3, mode=MODE)
    res = simulate(network, (0.0, 4000.0), y0, method="rk4", dt=0.01, stride=1)
    assert res.success
    obs = model.observed_index(branch.engine["observe"])
    tail = res.y[-int(300 / 0.01):, :, obs]                  # the last 300 ms
    half = 0.5 * (tail.max(axis=0) - tail.min(axis=0))
    assert half == pytest.approx(branch.engine["half_range"][k, :, obs], rel=0.01)
    i = int(np.argmax(half))
    s = tail[:, i] - tail[:, i].mean()
    up = np.flatnonzero((s[:-1] < 0) & (s[1:] >= 0))
    t_up = (up + s[up] / (s[up] - s[up + 1])) * 0.01        # interpolated upward crossings
    assert np.mean(np.diff(t_up)) == pytest.approx(branch["period"][k], rel=1e-3)


def test_pattern_step_from_a_transverse_hopf_point(tmp_path):
    """``kind = "pattern"`` with a mode whose J(Lambda) has a complex pair: the oscillatory branch in
    branches.csv (solution LC, mode of origin, period and frequency), the profiles and the figures."""
    import pandas as pd
    import xarray as xr

    from bifnet.errors import RunFileError
    from bifnet.runs import execute_run_file

    model = load_model("ngnmm_ping")
    operator = _random_operator(model, 6, 5)
    folder = tmp_path / "net6"
    folder.mkdir()
    np.savetxt(folder / "weights.txt", np.asarray(operator.connectome.weights), fmt="%.17g")
    rng = np.random.default_rng(0)
    (folder / "centres.txt").write_text("".join(f"r{i} {a:.3f} {b:.3f} {c:.3f}\n"
                                                for i, (a, b, c) in enumerate(rng.uniform(0, 100, (6, 3)))))
    text = f"""
model = "ngnmm_ping"
connectome = "{folder}"
parameters = {{ eps = 15.0 }}
[[steps]]
name = "osc"
kind = "pattern"
start = {{ mode = 6, Iext_e = 16.6 }}
range = {{ Iext_e = [16.0, 30.0] }}
settings = {{ ds = 0.02, ds_max = 1.0, max_steps = 2 }}
shooting = {{ first_amplitude = 0.01 }}
"""
    run = tmp_path / "run.toml"
    run.write_text(text)
    out = execute_run_file(run, out=tmp_path / "out")
    table = pd.read_csv(out / "branches.csv")
    rows = table[table["step"] == "osc"]
    assert len(rows) == 4 and set(rows["solution"]) == {"LC"} and set(rows["mode"]) == {6}
    assert rows["kind"].iloc[0] == "HB" and rows["Iext_e"].iloc[0] == pytest.approx(16.605932, abs=1e-5)
    assert np.allclose(rows["frequency_hz"], 1000.0 / rows["period"])
    assert list(rows["stable"].iloc[1:]) == [True] * 3
    assert np.all(rows["return_error"].iloc[1:] < 1e-6) and np.all(rows["trivial_error"].iloc[1:] < 1e-6)
    profiles = xr.open_dataset(out / "pattern_osc.nc")
    assert profiles["amplitude"].shape == (4, 6, 6) and profiles.attrs["solution"] == "LC"
    assert float(profiles["amplitude"][0].max()) == 0.0 and float(profiles["amplitude"][3].max()) > 0
    profiles.close()
    assert (out / "pattern_osc.png").stat().st_size > 0 and (out / "pattern_osc_brain.png").stat().st_size > 0
    run.write_text(text.replace("first_amplitude = 0.01", "first_amplitude = 0.01, nonsense = 1"))
    with pytest.raises(RunFileError, match="nonsense"):
        execute_run_file(run, out=tmp_path / "out2")


@pytest.mark.slow
def test_oscillatory_pattern_of_tvb68_from_a_transverse_hopf_curve(tmp_path):
    """The issue's case: ngnmm_ping on tvb68 (408 dimensions), eps = 8, the HB curve of mode 68 of a
    transverse step; the Hopf point at Iext_e = 4.7670668 (brentq on the mode's growth rate, engine
    notes), l1 = -0.119; orbits that return under the network integrator, follow the normal form
    and are unstable (every other mode is unstable at the homogeneous state)."""
    import pandas as pd

    from bifnet.runs import execute_run_file

    text = """
model = "ngnmm_ping"
connectome = "tvb68"
[[steps]]
name = "tr"
kind = "transverse"
free = ["Iext_e", "eps"]
range = { Iext_e = [4.0, 6.0], eps = [6.0, 10.0] }
modes = "most_negative"
levels = [8.0]
cycles = false
[[steps]]
name = "osc"
kind = "pattern"
start = "tr:HB[mode68]#1"
parameters = { eps = 8.0 }
range = { Iext_e = [4.5, 5.5] }
settings = { ds = 0.05, ds_max = 0.5, max_steps = 3 }
"""
    run = tmp_path / "run.toml"
    run.write_text(text)
    out = execute_run_file(run, out=tmp_path / "out")
    table = pd.read_csv(out / "branches.csv")
    rows = table[table["step"] == "osc"]
    assert len(rows) == 5 and set(rows["mode"]) == {68} and set(rows["solution"]) == {"LC"}
    assert rows["Iext_e"].iloc[0] == pytest.approx(4.7670668, abs=2e-7)
    points = pd.read_csv(out / "special_points.csv")
    hopf = points[(points["step"] == "osc") & (points["name"] == "HB1")]
    assert float(hopf["l1"].iloc[0]) == pytest.approx(-0.119, abs=1e-3)
    orbits = rows.iloc[1:]
    assert np.all(orbits["return_error"] < 1e-6) and np.all(orbits["trivial_error"] < 1e-6)
    assert np.allclose(orbits["amplitude"], orbits["predicted_amplitude"], rtol=0.01)
    assert list(orbits["stable"]) == [False] * 4 and set(orbits["n_unstable"]) == {134}
    assert rows["period"].iloc[0] == pytest.approx(28.8258, abs=1e-3)


def test_shipped_oscillatory_run_file_is_valid():
    """continuation_runs/oscillatory_pattern.toml passes the up-front checks (schema, model, connectome)."""
    from pathlib import Path

    from bifnet.connectome import load_connectome
    from bifnet.runs import check_run, load_run_file

    path = Path(__file__).resolve().parent.parent / "continuation_runs" / "oscillatory_pattern.toml"
    run = load_run_file(path)
    check_run(run, load_model("ngnmm_ping"), load_connectome("tvb68"))
    step = run.steps[0]
    assert step["kind"] == "pattern" and step["start"]["mode"] == 68
