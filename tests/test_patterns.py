"""Normal forms of transverse bifurcations: the mode-reduced formulas of
bifnet.patterns.criticality against the full-dimensional Kuznetsov formulas
on the whole network (dense eigenvectors of the compiled network Jacobian,
exact directional derivatives of the network field written with explicit
sums over the coupling matrix; no mode decomposition)."""

import numpy as np
import pytest
import sympy

from bifnet.connectome import Connectome, coupling_operator
from bifnet.continuation.equilibria import find_equilibrium
from bifnet.model import load_model
from bifnet.network import build_network
from bifnet.network.core import network_jacobian_dense
from bifnet.patterns.criticality import locate_transverse_point, transverse_normal_form
from bifnet.transverse.dispersion import equilibrium_dispersion


def _random_operator(model, N, seed, blocks=False):
    rng = np.random.default_rng(seed)
    if blocks:   # two identical halves: modes odd under the swap have zero cubic moments (pitchforks)
        h = N // 2
        A = rng.uniform(0.1, 1, (h, h))
        A = (A + A.T) / 2
        np.fill_diagonal(A, 0)
        C = rng.uniform(0.1, 1, (h, h))
        C = (C + C.T) / 2
        W = np.block([[A, C], [C, A]])
    else:
        W = rng.uniform(0.1, 1, (N, N))
        W = (W + W.T) / 2
        np.fill_diagonal(W, 0)
        if seed == 3:   # a strongly bipartite one: a well separated most negative mode
            g = np.arange(N) % 2
            W = W * np.where(g[:, None] != g[None, :], 3.0, 0.3)
    con = Connectome(weights=W, labels=tuple(str(i) for i in range(N)), centres=None, name=f"random{N}",
                     source="test")
    return coupling_operator(con, model.coupling)


def _directional(model, operator, params):
    """``d(X0, dirs, orders)``: exact mixed directional derivative of the network field
    ``F_i(X) = f(x_i, s_k sum_j G_ij X_{j, c_k})`` (sympy, explicit sums over ``G``)."""
    G = np.array(operator.matrix)
    N, n = G.shape[0], model.n_variables
    hs = sympy.symbols("h0:3")
    pvals = {sympy.Symbol(k, real=True): v for k, v in params.items()}
    eqs = [e.xreplace(pvals) for e in model.equations]
    strengths = model.strengths(params)

    def d(X0, dirs, orders):
        X = np.asarray(X0, dtype=float).reshape(N, n)
        D = [np.asarray(v, dtype=complex).reshape(N, n) for v in dirs]
        out = []
        for i in range(N):
            sub = {s: sympy.Float(X[i, r]) + sum(h * sympy.sympify(complex(v[i, r])) for h, v in zip(hs, D))
                   for r, s in enumerate(model.state_symbols)}
            for k, c in enumerate(model.coupled_indices):
                # the network input written out: C_k,i = s_k sum_j G_ij x_j,c (numbers first, then the h terms)
                C0 = strengths[k] * sum(G[i, j] * X[j, c] for j in range(N))
                sub[model.input_symbols[k]] = sympy.Float(C0) + sum(
                    h * sympy.sympify(complex(strengths[k] * sum(G[i, j] * v[j, c] for j in range(N))))
                    for h, v in zip(hs, D))
            for e in eqs:
                v = e.xreplace(sub)
                for h, o in zip(hs, orders):
                    v = sympy.diff(v, h, o)
                out.append(complex(v.xreplace({h: 0 for h in hs})))
        return np.array(out)

    return d


def _dense(model, operator, params, x):
    network = build_network(model, operator, params)
    X0 = np.tile(x, network.n_regions)
    return X0, network_jacobian_dense(network, X0), _directional(model, operator, params)


def _dense_l1(model, operator, params, x):
    """Kuznetsov (3.20) in R^(N n)."""
    X0, J, d = _dense(model, operator, params, x)
    ev, V = np.linalg.eig(J)
    cand = np.flatnonzero(ev.imag > 1e-8)
    k = cand[np.argmin(np.abs(ev[cand].real))]
    omega, q = ev[k].imag, V[:, k] / np.linalg.norm(V[:, k])
    wl, Wl = np.linalg.eig(J.T)
    p = Wl[:, np.argmin(np.abs(wl + 1j * omega))]
    p = p / np.conj(np.vdot(p, q))
    qb = np.conj(q)
    B = lambda u, v: d(X0, [u, v], [1, 1])  # noqa: E731
    c = d(X0, [q, qb], [2, 1])
    I = np.eye(J.shape[0])
    term = (np.vdot(p, c) - 2 * np.vdot(p, B(q, np.linalg.solve(J, B(q, qb))))
            + np.vdot(p, B(qb, np.linalg.solve(2j * omega * I - J, B(q, q)))))
    return term.real / (2 * omega), ev[k]


def _dense_branch_point(model, operator, params, x, Q_ref):
    """Centre-manifold coefficients ``y' = a2 y^2 + a3 y^3`` in R^(N n), ``Q`` aligned with ``Q_ref``."""
    X0, J, d = _dense(model, operator, params, x)
    ev, V = np.linalg.eig(J)
    k = int(np.argmin(np.abs(ev)))
    Q = np.real(V[:, k])
    Q = Q / np.linalg.norm(Q) * np.sign(Q @ np.real(Q_ref))
    wl, Wl = np.linalg.eig(J.T)
    P = np.real(Wl[:, np.argmin(np.abs(wl))])
    P = P / (P @ Q)
    BQQ = np.real(d(X0, [Q], [2]))
    a2 = 0.5 * P @ BQQ
    M = np.block([[J, Q[:, None]], [P[None, :], np.zeros((1, 1))]])
    h2 = np.linalg.solve(M, np.concatenate([-(BQQ - (P @ BQQ) * Q), [0.0]]))[:-1]
    a3 = (P @ np.real(d(X0, [Q], [3])) + 3 * P @ np.real(d(X0, [Q, h2], [1, 1]))) / 6
    return a2, a3, ev[k]


def _located(model, operator, params, free, lo, hi, mode):
    lam = operator.spectrum().eigenvalues[mode - 1]
    p = dict(params)
    p[free] = lo
    x_lo = find_equilibrium(model, p)
    p[free] = hi
    x_hi = find_equilibrium(model, p, x_lo, settle_time=0.0)
    value, x = locate_transverse_point(model, params, free, lam, (lo, hi), (x_lo, x_hi))
    return {**params, free: value}, x


HOPF_CASES = [
    # model, N, seed, overrides, free, bracket, mode
    ("ngnmm_ping", 6, 3, {"eps": 8.0}, "Iext_e", (4.6, 5.4), 6),     # additive
    ("wilson_cowan", 6, 5, {"eps": 3.0}, "Iext_e", (0.45, 0.6), 6),  # input inside the sigmoid: f_CC != 0
    ("brusselator", 6, 5, {"Dv": 1.0, "eps": 0.3}, "b", (4.4, 4.65), 2),  # diffusive (Laplacian)
]


@pytest.mark.parametrize("case", HOPF_CASES, ids=[c[0] for c in HOPF_CASES])
def test_transverse_hopf_l1_matches_full_network(case):
    name, N, seed, overrides, free, bracket, mode = case
    model = load_model(name)
    operator = _random_operator(model, N, seed)
    params, x = _located(model, operator, model.resolve_parameters(overrides), free, *bracket, mode)
    nf = transverse_normal_form(model, operator, params, x, mode)
    assert nf.kind == "HB" and abs(nf.eigenvalue.real) < 1e-10 * nf.omega
    # the full network has the same critical pair, and the same l1
    l1, mu = _dense_l1(model, operator, params, x)
    assert abs(mu - nf.eigenvalue) < 1e-9 * nf.omega
    assert np.isfinite(l1) and abs(l1) > 1e-12
    assert abs(nf.l1 - l1) <= 1e-8 * abs(l1)
    assert nf.criticality == ("super" if l1 < 0 else "sub")


def test_transverse_hopf_of_a_complex_mode_matches_full_network():
    """A non-symmetric W: complex eigenvalues of P; the pair +-i omega comes from a mode and its conjugate."""
    model = load_model("ngnmm_ping")
    rng = np.random.default_rng(11)
    N = 6
    W = rng.uniform(0.0, 1.0, (N, N)) ** 3
    np.fill_diagonal(W, 0)
    con = Connectome(weights=W, labels=tuple(str(i) for i in range(N)), centres=None, name="asym", source="test")
    operator = coupling_operator(con, model.coupling)
    lam = operator.spectrum().eigenvalues
    assert np.iscomplexobj(lam)
    mode = 1 + int(np.flatnonzero(np.abs(np.imag(lam)) > 1e-3)[0])
    params = model.resolve_parameters({"eps": 8.0})
    grid = np.linspace(3.5, 7.0, 36)
    rates, states = [], []
    x = None
    for v in grid:
        params["Iext_e"] = v
        x = find_equilibrium(model, params, x, settle_time=2000.0 if x is None else 0.0)
        states.append(x)
        rates.append(equilibrium_dispersion(model, params, x, [lam[mode - 1]]).growth_rate[0])
    k = int(np.flatnonzero(np.sign(rates[:-1]) * np.sign(rates[1:]) < 0)[0])
    value, x = locate_transverse_point(model, params, "Iext_e", lam[mode - 1], (grid[k], grid[k + 1]),
                                       (states[k], states[k + 1]))
    params["Iext_e"] = value
    nf = transverse_normal_form(model, operator, params, x, mode, "HB")
    l1, mu = _dense_l1(model, operator, params, x)
    assert abs(mu.imag - nf.omega) < 1e-9 * nf.omega
    assert abs(nf.l1 - l1) <= 1e-8 * abs(l1)


@pytest.mark.parametrize("blocks", [False, True], ids=["transcritical", "pitchfork"])
def test_transverse_branch_point_coefficients_match_full_network(blocks):
    """Turing branch points of the Brusselator (diffusive): a generic one is
    transcritical; on two identical halves the modes odd under the swap have
    a2 = 0 and the cubic coefficient decides."""
    model = load_model("brusselator")
    operator = _random_operator(model, 6, 5, blocks=blocks)
    lam = operator.spectrum().eigenvalues
    params = model.resolve_parameters({})
    if blocks:
        U = operator.spectrum().eigenvectors
        odd = [m for m in range(2, 7) if np.allclose(U[:3, m - 1], -U[3:, m - 1], atol=1e-10)]
        mode = odd[0]
    else:
        mode = 2
    # the Turing fold of mode mu: b_c = 1 + eps Du mu + Du a^2 / Dv + a^2 / (eps Dv mu) (model file)
    a, Du, Dv, eps = params["a"], params["Du"], params["Dv"], params["eps"]
    mu = lam[mode - 1]
    b_c = 1 + eps * Du * mu + Du * a ** 2 / Dv + a ** 2 / (eps * Dv * mu)
    params, x = _located(model, operator, params, "b", b_c - 0.05, b_c + 0.05, mode)
    assert abs(params["b"] - b_c) < 1e-10 * b_c
    nf = transverse_normal_form(model, operator, params, x, mode, "BP")
    assert nf.kind == "BP" and abs(nf.eigenvalue) < 1e-10
    Q = np.kron(np.real(nf.u), np.real(nf.q))
    a2, a3, mu0 = _dense_branch_point(model, operator, params, x, Q)
    assert abs(mu0) < 1e-10
    if blocks:
        assert abs(a2) < 1e-10 and abs(nf.quadratic) < 1e-10
        assert nf.criticality == ("super" if a3 < 0 else "sub")
    else:
        assert abs(nf.quadratic - a2) <= 1e-8 * abs(a2)
        assert nf.criticality == "transcritical"
    assert abs(nf.cubic - a3) <= 1e-8 * abs(a3)


def test_transverse_points_carry_criticality(tmp_path):
    """The transverse step writes l1 and criticality of each located crossing; tvb68 mode 68 at eps = 8 is the
    transverse Hopf point 4.767067 of the engine notes (brentq on the growth rate: 4.7670668)."""
    import pandas as pd

    from bifnet.connectome import load_connectome
    from bifnet.runs import execute_run_file

    run = tmp_path / "t.toml"
    run.write_text("""
model = "ngnmm_ping"
connectome = "tvb68"
[[steps]]
name = "tr"
kind = "transverse"
free = ["Iext_e", "eps"]
range = { Iext_e = [0.0, 16.0], eps = [0.0, 30.0] }
modes = [68]
levels = [8.0]
cycles = false
settings = { ds = 0.05, ds_max = 0.25 }
""")
    out = execute_run_file(run, out=tmp_path / "out")
    points = pd.read_csv(out / "transverse_points.csv")
    row = points[(points["mode"] == 68) & (points["kind"] == "HB")].iloc[0]
    assert row["Iext_e_located"] == pytest.approx(4.7670668, abs=2e-7)
    assert abs(row["Iext_e_located"] - row["Iext_e"]) < 0.1       # the interpolated crossing nearby
    # the same number from the library function at the located point
    model = load_model("ngnmm_ping")
    operator = coupling_operator(load_connectome("tvb68"), model.coupling)
    params = model.resolve_parameters({"eps": 8.0, "Iext_e": float(row["Iext_e_located"])})
    x = find_equilibrium(model, params, settle_time=0.0, x0=find_equilibrium(model, {**params, "Iext_e": 4.5}))
    nf = transverse_normal_form(model, operator, params, x, 68, "HB")
    assert row["l1"] == pytest.approx(nf.l1, rel=1e-6)
    assert row["criticality"] == ("super" if nf.l1 < 0 else "sub")
    assert row["frequency_hz_located"] == pytest.approx(nf.omega / (2 * np.pi) * 1000, rel=1e-9)
    assert np.isnan(row["nf_quadratic"])


# ---------------------------------------------------------------------------
# stationary patterns of the full network


def _turing_point(operator, mode, overrides=None):
    model = load_model("brusselator")
    params = model.resolve_parameters(overrides or {})
    lam = operator.spectrum().eigenvalues
    a, Du, Dv, eps = params["a"], params["Du"], params["Dv"], params["eps"]
    mu = lam[mode - 1]
    b_c = 1 + eps * Du * mu + Du * a ** 2 / Dv + a ** 2 / (eps * Dv * mu)
    return model, _located(model, operator, params, "b", b_c - 0.05, b_c + 0.05, mode)


def _odd_mode(operator):
    U = operator.spectrum().eigenvectors
    h = U.shape[0] // 2
    return next(m for m in range(2, U.shape[0] + 1) if np.allclose(U[:h, m - 1], -U[h:, m - 1], atol=1e-10))


def test_transcritical_pattern_branch(tmp_path):
    """The stationary pattern of a transcritical Turing point: every point an equilibrium of the
    compiled network field; the mode amplitude follows y = -nu' (b - b_c) / a2 near the point; a
    stable point of the branch is reached by the network integrator from the homogeneous state
    plus a small perturbation along the mode."""
    from bifnet.network.core import network_rhs
    from bifnet.network.integrate import simulate
    from bifnet.patterns.equilibria import PatternSettings, stationary_pattern_branch

    brus = load_model("brusselator")
    operator = _random_operator(brus, 6, 5)
    # eps = 0.25: mode 2 turns unstable first (b_c = 2.342, mode 3 at 2.43), below the homogeneous Hopf (3.25)
    model, (params, x) = _turing_point(operator, 2, {"eps": 0.25})
    branch = stationary_pattern_branch(model, operator, params, "b", x, 2,
                                       PatternSettings(ds=0.002, ds_max=0.05, max_steps=40, bounds=(1.5, 5.0)))
    nf = branch.engine["normal_form"]
    assert nf.criticality == "transcritical" and branch.mode == 2
    network = build_network(model, operator, params)
    states, b = branch.engine["states"], branch["b"]
    for k in range(len(b)):
        r = network_rhs(network.with_parameters(b=float(b[k])), states[k])
        assert np.max(np.abs(r)) < 1e-8
    k0 = branch.engine["bp_index"]
    assert b[k0] == params["b"] and np.allclose(states[k0], x)
    speed = branch.engine["speed"]
    y = branch["pattern_amplitude"]
    near = [k for k in range(len(b)) if 0 < abs(y[k]) < 0.01]
    assert len(near) >= 2
    for k in near:
        predicted = -speed * (b[k] - params["b"]) / nf.quadratic
        assert y[k] == pytest.approx(predicted, rel=0.05)
    # the side where the homogeneous state is unstable (nu > 0) carries the stable small pattern
    side = [k for k in range(len(b)) if speed * (b[k] - params["b"]) > 0 and 0.004 < abs(y[k]) < 0.05]
    k = side[0]
    assert branch["stable"][k] == 1
    net_k = network.with_parameters(b=float(b[k]))
    Q = np.kron(np.real(nf.u), np.real(nf.q)).reshape(states[k].shape)
    x_hom = find_equilibrium(model, {**params, "b": float(b[k])}, x, settle_time=0.0)
    y0 = np.tile(x_hom, (6, 1)) + 1e-3 * np.sign(y[k]) * Q
    result = simulate(net_k, (0.0, 3000.0), y0, method="dopri5", rtol=1e-10, atol=1e-12, stride=1000)
    assert result.success
    assert np.max(np.abs(result.y[-1] - states[k])) < 1e-6


def test_subcritical_pitchfork_pattern_has_a_fold():
    """On two identical halves an odd mode's Turing point is a pitchfork; here subcritical
    (a3 > 0): the amplitude follows y^2 = -nu' (b - b_c) / a3 and the branch folds back (LP)
    on the side where the mode is stable."""
    from bifnet.patterns.equilibria import PatternSettings, stationary_pattern_branch

    brus = load_model("brusselator")
    operator = _random_operator(brus, 6, 5, blocks=True)
    mode = _odd_mode(operator)
    model, (params, x) = _turing_point(operator, mode)
    branch = stationary_pattern_branch(model, operator, params, "b", x, mode,
                                       PatternSettings(ds=0.001, ds_max=0.05, max_steps=80, bounds=(2.5, 5.0)))
    nf = branch.engine["normal_form"]
    assert nf.criticality == "sub" and nf.cubic > 0
    speed, b, y = branch.engine["speed"], branch["b"], branch["pattern_amplitude"]
    near = [k for k in range(len(b)) if 0 < abs(y[k]) < 0.004]
    assert near
    for k in near:
        assert abs(y[k]) == pytest.approx(np.sqrt(-speed * (b[k] - params["b"]) / nf.cubic), rel=0.05)
    folds = [sp for sp in branch.special_points if sp.kind.value == "LP"]
    assert folds
    assert all(speed * (sp.parameters["b"] - params["b"]) < 0 for sp in folds)


def test_pattern_step_outputs(tmp_path):
    """``kind = "pattern"`` from a transverse fold curve of tvb68: the branch in branches.csv with its
    mode of origin, per-region profiles in the NetCDF equal to the branch's states, the figures, and
    the hysteresis between the pattern's fold and the branch point in simulations."""
    import pandas as pd
    import xarray as xr

    from bifnet.errors import BifnetError
    from bifnet.runs import execute_run_file

    text = """
model = "brusselator"
connectome = "tvb68"
[[steps]]
name = "tr"
kind = "transverse"
free = ["b", "eps"]
range = { b = [2.0, 4.0], eps = [0.5, 2.0] }
modes = "most_positive"
levels = [1.0]
cycles = false
[[steps]]
name = "pat"
kind = "pattern"
start = "tr:LP[mode68]#1"
range = { b = [2.0, 6.0] }
settings = { ds = 0.01, ds_max = 0.05, max_steps = 15 }
"""
    run = tmp_path / "p.toml"
    run.write_text(text)
    out = execute_run_file(run, out=tmp_path / "out")
    points = pd.read_csv(out / "transverse_points.csv")
    lp = points[points["kind"] == "LP"].iloc[0]
    assert lp["criticality"] == "transcritical" and lp["nf_quadratic"] != 0
    table = pd.read_csv(out / "branches.csv")
    rows = table[table["step"] == "pat"]
    assert len(rows) == 31 and set(rows["mode"]) == {68} and set(rows["operator"]) == {"L"}
    assert rows["residual"].max() < 1e-8
    bp = rows[rows["kind"] == "BP"]
    assert len(bp) == 1 and bp["b"].iloc[0] == pytest.approx(lp["b_located"], abs=1e-12)
    ds = xr.open_dataset(out / "pattern_pat.nc")
    assert ds["mean"].shape == (31, 68, 2)
    # the regional means in branches.csv are the means of the profiles
    assert np.allclose(ds["mean"].sel(variable="u").mean("region").values, rows["u"].values, rtol=0, atol=1e-12)
    # the profiles are equilibria of the network field
    from bifnet.network.core import network_rhs

    model = load_model("brusselator")
    from bifnet.connectome import load_connectome

    network = build_network(model, coupling_operator(load_connectome("tvb68"), model.coupling), {"eps": 1.0})
    k = 25
    r = network_rhs(network.with_parameters(b=float(ds["b"][k])), ds["mean"].values[k])
    assert np.max(np.abs(r)) < 1e-8
    # hysteresis: between the fold and the branch point the homogeneous state (stable to every mode)
    # and a stable pattern coexist; the network integrator stays on each
    from bifnet.network.integrate import simulate

    b_c = float(bp["b"].iloc[0])
    folds = rows[rows["kind"] == "LP"]["b"].to_numpy()
    assert folds.size and folds.min() < b_c
    both = [i for i in range(len(rows)) if rows["stable"].iloc[i] and folds.min() < rows["b"].iloc[i] < b_c]
    assert both
    k = both[-1]
    net_k = network.with_parameters(b=float(ds["b"][k]))
    pattern = ds["mean"].values[k]
    x_hom = find_equilibrium(model, {**net_k.parameters}, pattern.mean(axis=0), settle_time=0.0)
    homogeneous = np.tile(x_hom, (68, 1))
    kick = 1e-4 * np.random.default_rng(1).standard_normal(pattern.shape)
    for start, target, other in ((pattern, pattern, homogeneous), (homogeneous, homogeneous, pattern)):
        end = simulate(net_k, (0.0, 500.0), start + kick, method="dopri5", rtol=1e-9, atol=1e-12, stride=1000).y[-1]
        assert np.max(np.abs(end - target)) < 2e-4 < 0.05 < np.max(np.abs(end - other))
    ds.close()
    assert (out / "pattern_pat.png").stat().st_size > 10_000
    assert (out / "pattern_pat_brain.png").stat().st_size > 10_000
    import json

    summary = json.loads((out / "run.json").read_text())["steps"][1]
    assert summary["criticality"] == "transcritical" and summary["max_residual"] < 1e-8
    k = summary["brain_points"][0]
    assert rows["stable"].iloc[k] and rows["u_spread"].iloc[k] == rows[rows["stable"]]["u_spread"].max()
    run.write_text(text.replace("LP[mode68]#1", "LP[mode67]#1"))
    with pytest.raises(BifnetError, match="1 step\\(s\\) failed: pat"):
        execute_run_file(run, out=tmp_path / "out2")
    import json

    entry = json.loads((tmp_path / "out2" / "run.json").read_text())["steps"][1]
    assert entry["error_kind"] == "RunFileError"
    assert entry["error"].startswith("step 'pat': step 'tr' has no curve 'LP[mode67]#1' (has: LP[mode68]#1")
    run.write_text(text.replace('start = "tr:LP[mode68]#1"', 'start = { mode = 68, b = 2.39 }\nparameters = { eps = 1.0 }'))
    out3 = execute_run_file(run, out=tmp_path / "out3")
    again = pd.read_csv(out3 / "branches.csv")
    again = again[again["step"] == "pat"]
    assert again["b"].iloc[15] == pytest.approx(bp["b"].iloc[0], abs=1e-10)


def test_transverse_hopf_l1_against_the_network_integrator():
    """At a transverse Hopf point that is the first instability of the homogeneous state (ngnmm_ping,
    eps = 15, mode 6 with Lambda = -0.39 of a random 6-node P, Iext_e = 16.606; every other mode
    stable), the network integrator (DOPRI5) started near the equilibrium along the critical
    eigenvector follows the normal form z' = i omega z + c1 |z|^2 z: 1/|z|^2 grows at the rate
    -2 Re c1 = -2 omega l1 (supercritical: the oscillation decays like t^(-1/2))."""
    from bifnet.network.integrate import simulate

    model = load_model("ngnmm_ping")
    operator = _random_operator(model, 6, 5)
    params, x = _located(model, operator, model.resolve_parameters({"eps": 15.0}), "Iext_e", 16.5, 17.0, 6)
    rates = equilibrium_dispersion(model, params, x, operator.spectrum().eigenvalues).growth_rate
    assert np.all(rates[:5] < -1e-3) and abs(rates[5]) < 1e-12
    nf = transverse_normal_form(model, operator, params, x, 6)
    assert nf.kind == "HB" and nf.criticality == "super"
    X0, J, _ = _dense(model, operator, params, x)
    ev, V = np.linalg.eig(J)
    k = int(np.argmin(np.abs(ev - 1j * nf.omega)))
    Q = V[:, k] / np.linalg.norm(V[:, k])
    wl, Wl = np.linalg.eig(J.T)
    P = Wl[:, np.argmin(np.abs(wl + 1j * nf.omega))]
    P = P / np.conj(np.vdot(P, Q))
    period = 2 * np.pi / nf.omega
    network = build_network(model, operator, params)
    result = simulate(network, (0.0, 2000.0), X0 + 2 * np.real(0.1 * Q), method="dopri5", rtol=1e-11,
                      atol=1e-13, dt=period / 64, stride=1)
    assert result.success
    z = (result.y.reshape(len(result.t), -1) - X0) @ np.conj(P)
    periods = len(z) // 64
    inverse = np.array([np.mean(1 / np.abs(z[i * 64:(i + 1) * 64]) ** 2) for i in range(periods)])
    times = np.array([np.mean(result.t[i * 64:(i + 1) * 64]) for i in range(periods)])
    slope = np.polyfit(times[5:], inverse[5:], 1)[0]
    assert slope == pytest.approx(-2 * nf.omega * nf.l1, rel=0.01)


def test_a_pattern_that_folds_next_to_its_branch_point_is_not_the_homogeneous_branch():
    """The Brusselator on tvb96 at eps = 0.002, mode 96 (Lambda next to mode 95's: the centre manifold is
    nearly two-dimensional): on one side the pattern folds 0.0004 in b from its branch point (y = -0.0058).
    The first step (0.01) passed the fold and the corrector fell onto the homogeneous branch, which passes
    through the branch point: half of "the pattern" was the homogeneous state (spread 1e-13), with 56 BP and
    HB points of its own, and the stable small pattern was missing. Now no row but the branch point is
    homogeneous, the row next to it is the stable small pattern (an equilibrium of the network field, no
    eigenvalue of a finite-difference Jacobian in the right half plane), and the fold is located: the
    parameter turns there and the finite-difference Jacobian has an eigenvalue at 0."""
    from bifnet.connectome import load_connectome
    from bifnet.network.core import network_rhs
    from bifnet.patterns.equilibria import PatternSettings, stationary_pattern_branch

    brus = load_model("brusselator")
    con = load_connectome("tvb96")
    operator = coupling_operator(con, brus.coupling)
    mode = con.n_regions
    model, (params, x) = _turing_point(operator, mode, {"eps": 0.002})
    branch = stationary_pattern_branch(model, operator, params, "b", x, mode,
                                       PatternSettings(ds=0.01, ds_max=0.05, max_steps=12, bounds=(2.0, 6.0)))
    states, b, k0 = branch.engine["states"], branch["b"], branch.engine["bp_index"]
    spread = np.linalg.norm(states - states.mean(axis=1, keepdims=True), axis=(1, 2))
    assert spread[k0] < 1e-12 and np.all(np.delete(spread, k0) > 1e-4)
    network = build_network(model, operator, params)

    def fd_jacobian(X, p):
        net = network.with_parameters(b=float(p))
        X = X.ravel()
        h = 1e-7
        return np.column_stack([(network_rhs(net, X + h * e) - network_rhs(net, X - h * e)) / (2 * h)
                                for e in np.eye(X.size)])

    # the side where the pattern folds: its first row is the stable small pattern
    side = k0 - 1 if abs(b[k0 - 1] - b[k0]) < abs(b[k0 + 1] - b[k0]) else k0 + 1
    assert np.max(np.abs(network_rhs(network.with_parameters(b=float(b[side])), states[side].ravel()))) < 1e-10
    assert np.max(np.linalg.eigvals(fd_jacobian(states[side], b[side])).real) < 0
    assert branch["stable"][side] == 1
    fold = min((sp for sp in branch.special_points if sp.kind.value == "LP"),
               key=lambda sp: abs(sp.parameters["b"] - params["b"]))
    assert fold.located and abs(fold.parameters["b"] - params["b"]) < 1e-3
    i = fold.index
    assert (b[i] - b[i - 1]) * (b[i + 1] - b[i]) < 0 or (b[i + 1] - b[i]) * (b[i + 2] - b[i + 1]) < 0
    X = branch.engine["solutions"][fold.name].X.reshape(states[0].shape)
    assert branch.engine["solutions"][fold.name].value == fold.parameters["b"]
    assert np.min(np.abs(np.linalg.eigvals(fd_jacobian(X, fold.parameters["b"])))) < 1e-5


def test_hopf_points_that_cross_between_the_same_rows_are_each_located():
    """Wilson-Cowan on a sparse random symmetric 20-node connectome (tests/data/rand20_sparse.csv), inhibitory
    coupling eps = -9, the pattern of mode 20: an isola through its branch point, with dense Hopf crossings
    of the 40-dimensional network. Before: one HB per row interval however many pairs crossed there (4 -> 8
    unstable eigenvalues with one HB), and the continuation went round the isola twice in each direction
    (401 rows, every point four times). Now the pairs are matched from row to row, each crossing is solved
    from its own frequency, and the loop is closed once. Every located HB is checked against a central-
    difference Jacobian of the network field: a pair within 1e-6 of +-i omega; no two are the same point."""
    from bifnet.connectome import load_connectome
    from bifnet.network.core import network_rhs
    from bifnet.patterns.equilibria import PatternSettings, stationary_pattern_branch
    from pathlib import Path

    model = load_model("wilson_cowan")
    con = load_connectome(Path(__file__).parent / "data" / "rand20_sparse.csv")
    operator = coupling_operator(con, model.coupling)
    params, x = _located(model, operator, model.resolve_parameters({"eps": -9.0}), "Iext_e", 0.95, 1.05, 20)
    branch = stationary_pattern_branch(model, operator, params, "Iext_e", x, 20,
                                       PatternSettings(ds=0.01, ds_max=0.05, max_steps=200, bounds=(-1.0, 4.0)))
    assert branch.status.startswith("+: closed") and len(branch) < 200
    network = build_network(model, operator, params)
    hopf = [sp for sp in branch.special_points if sp.kind.value == "HB" and sp.located]
    assert len(hopf) >= 30
    per_interval = {}
    for sp in hopf:
        per_interval[sp.index] = per_interval.get(sp.index, 0) + 1
    assert max(per_interval.values()) >= 2        # two or more pairs between the same rows, each located
    # no located point of the pattern is a homogeneous state (a transverse point of the homogeneous branch
    # 0.01 from the pattern's rows was a located "BP" at spread 1e-15)
    for name, solution in branch.engine["solutions"].items():
        X = solution.X.reshape(20, -1)
        assert np.linalg.norm(X - X.mean(axis=0)) > 1e-4, name
    seen = []
    for sp in hopf:
        solution = branch.engine["solutions"][sp.name]
        net = network.with_parameters(Iext_e=float(solution.value))
        X, h = solution.X, 1e-6
        J = np.column_stack([(network_rhs(net, X + h * e) - network_rhs(net, X - h * e)) / (2 * h)
                             for e in np.eye(X.size)])
        ev = np.linalg.eigvals(J)
        omega = 2 * np.pi / sp.period
        assert np.min(np.abs(ev - 1j * omega)) < 1e-6, sp.name
        assert np.max(np.abs(network_rhs(net, X))) < 1e-9
        assert all(abs(v - solution.value) > 1e-7 or abs(w - omega) > 1e-6 for v, w in seen), sp.name
        seen.append((solution.value, omega))


def test_a_pattern_step_whose_range_excludes_its_start_is_refused(tmp_path):
    """The Brusselator's mode-68 branch point on tvb68 lies at b = 2.3905; a range of b from 3 to 6 used to
    give 3 points outside the range and exit 0. Now the step fails with one line that names both."""
    import json

    from bifnet.errors import BifnetError
    from bifnet.runs import execute_run_file

    run = tmp_path / "pat.toml"
    run.write_text('model = "brusselator"\nconnectome = "tvb68"\n[[steps]]\nname = "pat"\nkind = "pattern"\n'
                   'start = { mode = 68, b = 2.39 }\nparameters = { eps = 1.0 }\nrange = { b = [3.0, 6.0] }\n')
    with pytest.raises(BifnetError, match="1 step"):
        execute_run_file(run, out=tmp_path / "out")
    (partial,) = tmp_path.glob("out*")
    (step,) = json.loads((partial / "run.json").read_text())["steps"]
    assert step["status"] == "failed"
    assert "lies outside the step's range [3, 6] of b" in step["error"] and "b = 2.39" in step["error"]
