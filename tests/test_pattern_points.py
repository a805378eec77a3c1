"""Special points of full-network pattern branches: verification, two-parameter loci, hysteresis.

Every check is against an independent computation: the fold as the extremum of the parameter
along the branch (scipy's bounded minimiser on the network equations alone), the Hopf point as the
root of the critical pair's real part (brentq on dense eigenvalues), the branch point against the
closed form of the Turing point, loci against one-parameter branches at other values of the
second parameter, and hysteresis in simulations of the network integrator.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar

from bifnet.continuation.branch import SpecialKind, SpecialPoint
from bifnet.model import load_model
from bifnet.network import build_network
from bifnet.network.core import network_jacobian_dense, network_rhs
from test_patterns import _odd_mode, _random_operator


def _turing_point(operator, mode, overrides):
    """The Brusselator's Turing point of a mode in closed form (model file):
    b_c = 1 + eps Du mu + Du a^2 / Dv + a^2 / (eps Dv mu), homogeneous state (a, b / a)."""
    model = load_model("brusselator")
    params = model.resolve_parameters(overrides)
    a, Du, Dv, eps = params["a"], params["Du"], params["Dv"], params["eps"]
    mu = operator.spectrum().eigenvalues[mode - 1].real
    b_c = 1 + eps * Du * mu + Du * a ** 2 / Dv + a ** 2 / (eps * Dv * mu)
    return model, ({**params, "b": b_c}, np.array([a, b_c / a]))


def _pitchfork_branch(eps=1.0, bounds=(2.0, 5.0)):
    """Brusselator on two identical halves of 6 nodes (seed 5), an odd mode: a subcritical
    pitchfork at b = 4.394 (eps = 1) whose branch folds (LP at 3.6366) and has Hopf points (4.3895)."""
    from bifnet.patterns.equilibria import PatternSettings, stationary_pattern_branch

    brus = load_model("brusselator")
    operator = _random_operator(brus, 6, 5, blocks=True)
    mode = _odd_mode(operator)
    model, (params, x) = _turing_point(operator, mode, {"eps": eps})
    branch = stationary_pattern_branch(model, operator, params, "b", x, mode,
                                       PatternSettings(ds=0.002, ds_max=0.05, max_steps=150, bounds=bounds))
    return model, operator, params, x, branch


@pytest.fixture(scope="module")
def pitchfork():
    return _pitchfork_branch()


def _equilibrium(network, X, p, w=None, s=None, iterations=30):
    """Newton's method on ``F(X, b) = 0`` at fixed ``b = p`` (``w is None``) or, with ``w.X = s``, in ``(X, b)``
    (the parameter derivative by central differences); only the network field and its dense Jacobian."""
    X = np.asarray(X, dtype=float).ravel().copy()
    for _ in range(iterations):
        net = network.with_parameters(b=float(p))
        r = network_rhs(net, X)
        J = network_jacobian_dense(net, X)
        if w is None:
            dx = np.linalg.solve(J, -r)
            X += dx
            step = np.max(np.abs(dx))
        else:
            h = 1e-6
            Fp = (network_rhs(network.with_parameters(b=p + h), X) - network_rhs(network.with_parameters(b=p - h), X)) \
                / (2 * h)
            M = np.block([[J, Fp[:, None]], [w[None, :], np.zeros((1, 1))]])
            dz = np.linalg.solve(M, -np.concatenate([r, [w @ X - s]]))
            X += dz[:-1]
            p += dz[-1]
            step = np.max(np.abs(dz))
        if step < 1e-14:
            break
    assert np.max(np.abs(network_rhs(network.with_parameters(b=float(p)), X))) < 1e-11
    return X, p


def test_second_derivatives_are_exact(pitchfork):
    """``D_X (D_X F v)`` and ``psi^T D_X^2 F`` from the node Hessians agree with central differences
    of the dense network Jacobian."""
    from bifnet.patterns.verify import NetworkDerivatives

    model, operator, params, x, branch = pitchfork
    D = NetworkDerivatives(model, operator, params)
    X = branch.engine["states"][30].ravel()
    values = {"b": float(branch["b"][30])}
    rng = np.random.default_rng(2)
    v, e, psi = (rng.standard_normal(X.size) for _ in range(3))
    h = 1e-5
    Jp, Jm = D.J(X + h * e, values), D.J(X - h * e, values)
    assert np.allclose(D.D2v(X, values, v) @ e, (Jp - Jm) @ v / (2 * h), rtol=0, atol=1e-8)
    assert np.allclose(D.psi_D2(X, values, psi) @ e, (Jp - Jm).T @ psi / (2 * h), rtol=0, atol=1e-8)
    # D_p F, exact, against central differences of the compiled network field (b enters f, eps the strengths)
    network = build_network(model, operator, params)
    for name in ("b", "eps"):
        both = {"b": values["b"], "eps": params["eps"]}
        fd = (network_rhs(network.with_parameters(**{**both, name: both[name] + h}), X)
              - network_rhs(network.with_parameters(**{**both, name: both[name] - h}), X)) / (2 * h)
        assert np.allclose(D.dF(X, both, name), fd, rtol=0, atol=1e-8)


def test_verified_fold_of_a_pattern_branch(pitchfork):
    """LP1 is verified (located, residual < 1e-9, the fold system's method) and equals the extremum of b
    along the branch, found by a bounded minimiser on b(s) with the branch parametrised by s = w.X;
    the dense Jacobian there has a zero eigenvalue."""
    from bifnet.continuation.tables import special_points_frame

    model, operator, params, x, branch = pitchfork
    lp = branch.point("LP1")
    assert lp.kind is SpecialKind.LP and lp.located and lp.residual < 1e-9
    assert lp.verification.startswith("newton (full network): F = 0, DX v = 0")
    states, b = branch.engine["states"].reshape(len(branch), -1), branch["b"]
    i = lp.index
    w = states[i + 2] - states[i - 2]
    w /= np.linalg.norm(w)
    network = build_network(model, operator, params)
    guess = {"X": states[i], "p": float(b[i])}

    def b_of_s(s):
        X, p = _equilibrium(network, guess["X"], guess["p"], w, s)
        guess.update(X=X, p=p)
        return p

    s_lo, s_hi = sorted((w @ states[i - 2], w @ states[i + 2]))
    side = 1.0 if b[i] < b[i - 2] else -1.0          # a minimum of b (fold to the left) or a maximum
    best = minimize_scalar(lambda s: side * b_of_s(s), bounds=(s_lo, s_hi), method="bounded",
                           options={"xatol": 1e-9})
    assert lp.parameters["b"] == pytest.approx(side * best.fun, abs=1e-9)
    solution = branch.engine["solutions"]["LP1"]
    net = network.with_parameters(b=lp.parameters["b"])
    assert np.max(np.abs(network_rhs(net, solution.X))) < 1e-10
    ev = np.linalg.eigvals(network_jacobian_dense(net, solution.X))
    assert np.min(np.abs(ev)) < 1e-8
    row = special_points_frame("pat", [branch]).set_index("name").loc["LP1"]
    assert bool(row["located"]) and row["residual"] < 1e-9 and row["verification"] == lp.verification
    assert row["engine_value"] == pytest.approx(float(b[i]), abs=1e-15)


def test_verified_hopf_point_of_a_pattern_branch(pitchfork):
    """HB1 is verified and equals the root (brentq) of the real part of the critical complex pair of the
    dense network Jacobian along the branch; there the pair is +-i omega with the verified omega."""
    model, operator, params, x, branch = pitchfork
    hb = branch.point("HB1")
    assert hb.kind is SpecialKind.HB and hb.located and hb.residual < 1e-9
    solution = branch.engine["solutions"]["HB1"]
    omega = solution.omega
    assert hb.period == pytest.approx(2 * np.pi / omega, rel=1e-14)
    network = build_network(model, operator, params)
    states, b = branch.engine["states"].reshape(len(branch), -1), branch["b"]
    i = hb.index

    def rate(p):
        k = i if abs(p - b[i]) < abs(p - b[i + 1]) else i + 1
        X, _ = _equilibrium(network, states[k], p)
        ev = np.linalg.eigvals(network_jacobian_dense(network.with_parameters(b=p), X))
        near = ev[np.abs(ev.imag - omega) < 0.02 * omega]
        return float(np.max(near.real))

    root = brentq(rate, min(b[i], b[i + 1]), max(b[i], b[i + 1]), xtol=1e-13)
    assert hb.parameters["b"] == pytest.approx(root, abs=1e-8)
    ev = np.asarray(hb.eigenvalues)
    k = int(np.argmin(np.abs(ev - 1j * omega)))
    assert abs(ev[k].real) < 1e-8 and abs(ev[k].imag - omega) < 1e-8
    assert np.min(np.abs(ev + 1j * omega)) < 1e-8
    # its first Lyapunov coefficient against Kuznetsov's formula with sympy directional derivatives of the
    # network field written out node by node (tests/test_patterns.py)
    from test_patterns import _directional

    d = _directional(model, operator, {**params, "b": hb.parameters["b"]})
    X0 = solution.X
    J = network_jacobian_dense(network.with_parameters(b=hb.parameters["b"]), X0)
    w, V = np.linalg.eig(J)
    k = int(np.argmin(np.abs(w - 1j * omega)))
    q = V[:, k] / np.linalg.norm(V[:, k])
    wl, Wl = np.linalg.eig(J.T)
    p = Wl[:, np.argmin(np.abs(wl + 1j * omega))]
    p = p / np.conj(np.vdot(p, q))
    qb, eye = np.conj(q), np.eye(J.shape[0])
    B = lambda u, v: d(X0, [u, v], [1, 1])  # noqa: E731
    term = (np.vdot(p, d(X0, [q, qb], [2, 1])) - 2 * np.vdot(p, B(q, np.linalg.solve(J, B(q, qb))))
            + np.vdot(p, B(qb, np.linalg.solve(2j * omega * eye - J, B(q, q)))))
    l1 = term.real / (2 * omega)
    assert hb.details["l1"] == pytest.approx(l1, rel=1e-8)
    assert hb.details["criticality"] == ("super" if l1 < 0 else "sub")


def test_a_point_that_fails_verification_is_not_located(pitchfork):
    """A fold claimed at an ordinary row (Newton's method goes to the real fold, far away) and a Hopf
    point claimed where no pair is near the axis stay located = False, with residual, method and reason."""
    from bifnet.continuation.tables import special_points_frame
    from bifnet.patterns.verify import NetworkDerivatives, verify_pattern_points

    model, operator, params, x, branch = pitchfork
    points = np.column_stack([branch.engine["states"].reshape(len(branch), -1), branch["b"]])
    lp = branch.point("LP1")
    k = lp.index + 25
    fake = [SpecialPoint(kind=SpecialKind.LP, index=k, parameters={"b": float(branch["b"][k])}, name="LP9"),
            SpecialPoint(kind=SpecialKind.HB, index=k, parameters={"b": float(branch["b"][k])}, name="HB9")]
    out, solutions = verify_pattern_points(NetworkDerivatives(model, operator, params), points, fake, "b")
    assert not solutions
    for sp in out:
        assert not sp.located and sp.details["reason"] and sp.verification.startswith("newton (full network)")
    frame = special_points_frame("pat", [dataclasses.replace(branch, special_points=tuple(out))])
    assert not frame["located"].any() and (frame["reason"] != "").all()
    # the same fold claimed twice: the second claim is not a second point
    twice = [dataclasses.replace(lp, name="LP1", located=False), dataclasses.replace(lp, name="LP8", located=False)]
    (first, second), solutions = verify_pattern_points(NetworkDerivatives(model, operator, params), points, twice,
                                                       "b")
    assert first.located and not second.located and "already verified as LP1" in second.details["reason"]


def test_branch_point_system_finds_the_turing_point(pitchfork):
    """Moore's system on the full network, started from the homogeneous state 0.02 away, converges to the
    Turing point of the closed form b_c = 1 + eps Du mu + Du a^2 / Dv + a^2 / (eps Dv mu) (beta = 0)."""
    from bifnet.patterns.verify import NetworkDerivatives, solve_pattern_branch_point

    model, operator, params, x, branch = pitchfork
    mu = operator.spectrum().eigenvalues[branch.mode - 1].real
    a, Du, Dv, eps = params["a"], params["Du"], params["Dv"], params["eps"]
    b_c = 1 + eps * Du * mu + Du * a ** 2 / Dv + a ** 2 / (eps * Dv * mu)
    start = b_c + 0.02
    X = np.tile([a, start / a], 6)
    result = solve_pattern_branch_point(NetworkDerivatives(model, operator, params), X, {"b": start}, "b")
    assert result.ok and result.residual < 1e-10
    assert result.value == pytest.approx(b_c, abs=1e-10)
    assert np.allclose(result.X, np.tile([a, b_c / a], 6), atol=1e-10)
    # the same through verify_pattern_points: a BP detected between rows 2 and 3 of a homogeneous branch
    from bifnet.patterns.verify import verify_pattern_points

    grid = b_c + np.array([-0.03, -0.02, -0.004, 0.011, 0.025])
    points = np.array([np.concatenate([np.tile([a, v / a], 6), [v]]) for v in grid])
    claimed = SpecialPoint(kind=SpecialKind.BP, index=2, parameters={"b": float(grid[2:4].mean())}, name="BP2")
    (out,), solutions = verify_pattern_points(NetworkDerivatives(model, operator, params), points, [claimed], "b")
    assert out.located and out.parameters["b"] == pytest.approx(b_c, abs=1e-10)
    assert out.verification.startswith("newton (full network, Moore's system)")
    assert out.state == pytest.approx((a, b_c / a), abs=1e-10)


def test_pattern_loci_agree_with_one_parameter_branches(pitchfork):
    """The LP and HB loci in (b, eps), solved exactly at levels of eps, give the verified LP / HB of the
    one-parameter pattern branch computed afresh from the Turing point at that eps, to 1e-6."""
    from bifnet.patterns.loci import continue_pattern_locus
    from bifnet.patterns.verify import NetworkDerivatives

    model, operator, params, x, branch = pitchfork
    D = NetworkDerivatives(model, operator, params)
    levels = {"LP1": (0.9, 1.1), "HB1": (0.9, 0.95)}
    loci = {}
    for name, lv in levels.items():
        sp = branch.point(name)
        loci[name] = continue_pattern_locus(D, branch.engine["solutions"][name], sp.kind, ("b", "eps"),
                                            {"b": sp.parameters["b"], "eps": 1.0}, ds=0.01, ds_max=0.05,
                                            max_steps=40, bounds={"eps": (0.85, 1.15)}, levels=lv,
                                            variables=model.variable_names)
        assert loci[name]["residual"].max() < 1e-9
    for eps in (0.9, 0.95, 1.1):
        other = _pitchfork_branch(eps)[-1]
        for name, lv in levels.items():
            if eps not in lv:
                continue
            locus = loci[name]
            row = next(k for k in locus.engine["level_rows"] if abs(locus["eps"][k] - eps) < 1e-14)
            kind = SpecialKind.LP if name == "LP1" else SpecialKind.HB
            values = [sp.parameters["b"] for sp in other.special_points if sp.kind is kind and sp.located]
            assert values
            assert min(abs(v - locus["b"][row]) for v in values) < 1e-6
            if kind is SpecialKind.HB:
                omega = [2 * np.pi / sp.period for sp in other.special_points if sp.kind is kind and sp.located]
                assert min(abs(w - locus["omega"][row]) for w in omega) < 1e-6


def test_fold_and_hopf_loci_meet_at_a_verified_zero_hopf_point(pitchfork):
    """The fold locus (from LP1, b = 3.64) and the Hopf locus (from HB1, b = 4.39) of the pattern, continued
    separately in (b, eps), each report a zero-Hopf point solved from its defining system; the two are the
    same point (to 1e-9), and the dense network Jacobian there has a zero eigenvalue and a pair +-i omega."""
    from bifnet.patterns.loci import continue_pattern_locus
    from bifnet.patterns.verify import NetworkDerivatives

    model, operator, params, x, branch = pitchfork
    D = NetworkDerivatives(model, operator, params)
    found = {}
    for name in ("LP1", "HB1"):
        sp = branch.point(name)
        locus = continue_pattern_locus(D, branch.engine["solutions"][name], sp.kind, ("b", "eps"),
                                       {"b": sp.parameters["b"], "eps": 1.0}, ds=0.01, ds_max=0.1, max_steps=40,
                                       bounds={"eps": (0.75, 1.05)}, variables=model.variable_names)
        zh = [p for p in locus.special_points if p.kind is SpecialKind.ZH]
        assert len(zh) == 1 and zh[0].located and zh[0].residual < 1e-9
        found[name] = zh[0]
    a, b = found["LP1"], found["HB1"]
    assert a.parameters["b"] == pytest.approx(b.parameters["b"], abs=1e-9)
    assert a.parameters["eps"] == pytest.approx(b.parameters["eps"], abs=1e-9)
    assert a.period == pytest.approx(b.period, rel=1e-9)
    omega = 2 * np.pi / b.period
    ev = np.asarray(b.eigenvalues)
    assert np.min(np.abs(ev)) < 1e-8 and np.min(np.abs(ev - 1j * omega)) < 1e-8


def test_hysteresis_across_the_pattern_fold_in_simulations():
    """Transcritical Turing point of a random 6-node network (eps = 0.25, b_c = 2.3422): the pattern branch
    folds back below b_c (the lowest verified LP, 2.2718). Sweeping b quasi-statically with the network
    integrator: up from the homogeneous state, it stays homogeneous until b_c and jumps to the pattern
    past it; down from the pattern, it stays patterned below b_c down to the fold and drops to the
    homogeneous state past it."""
    from bifnet.network.integrate import simulate
    from bifnet.patterns.equilibria import PatternSettings, stationary_pattern_branch

    brus = load_model("brusselator")
    operator = _random_operator(brus, 6, 5)
    model, (params, x) = _turing_point(operator, 2, {"eps": 0.25})
    branch = stationary_pattern_branch(model, operator, params, "b", x, 2,
                                       PatternSettings(ds=0.002, ds_max=0.05, max_steps=150, bounds=(1.5, 5.0)))
    b_c = params["b"]
    folds = [sp.parameters["b"] for sp in branch.special_points if sp.kind is SpecialKind.LP and sp.located]
    b_fold = min(folds)
    assert b_fold < b_c - 0.05
    network = build_network(model, operator, params)
    rng = np.random.default_rng(3)

    def settle(b, y0, t_max=1000.0):
        y = simulate(network.with_parameters(b=float(b)), (0.0, t_max), y0, method="dopri5", rtol=1e-8,
                     atol=1e-10, stride=1000).y[-1]
        return y + 1e-6 * rng.standard_normal(y.shape)

    def spread(y):
        return float(np.ptp(y[:, 0]))

    # up: below the fold, between fold and b_c (bistable), then b = 2.40 (only mode 2 unstable there)
    up = np.array([b_fold - 0.02, b_fold + 0.02, b_c - 0.02, 2.40])
    y = np.tile([params["a"], up[0] / params["a"]], (6, 1)) + 1e-4 * rng.standard_normal((6, 2))
    spreads_up = []
    for b in up:
        y = settle(b, y, 3000.0 if b > b_c else 1000.0)
        spreads_up.append(spread(y))
    assert max(spreads_up[:3]) < 1e-4 < 0.5 < spreads_up[3]
    spreads_down, held = [], {}
    for b in up[::-1][1:]:
        y = settle(b, y)
        spreads_down.append(spread(y))
        held[float(b)] = y
    # b_c - 0.02 and b_fold + 0.02: still on the pattern (coexistence); b_fold - 0.02: homogeneous again
    assert min(spreads_down[:2]) > 0.5 and spreads_down[2] < 1e-4
    # the patterned state the sweep holds at b_fold + 0.02 is the stable point of the branch there
    target = float(up[1])
    b_rows = branch["b"]
    stable = np.flatnonzero((branch["stable"] == 1) & (np.abs(branch["pattern_amplitude"]) > 0.01))
    states = branch.engine["states"]
    k = stable[np.argmin([np.max(np.abs(states[j] - held[target])) for j in stable])]
    assert abs(b_rows[k] - target) < 0.01
    X, _ = _equilibrium(network, states[k], target)
    assert np.max(np.abs(X.reshape(6, 2) - held[target])) < 1e-5


def test_subcritical_pitchfork_hysteresis_and_a_simulated_pattern():
    """A subcritical pitchfork that is the first instability (two identical halves, seed 2, odd mode 3,
    eps at the minimum of b_c(eps mu), so b_c = 2.3419 < the homogeneous Hopf 3.25): the amplitude
    follows y^2 = -nu' (b - b_c) / a3 to 5 %; the two halves of the branch fold at the same b (the swap
    symmetry, to 1e-10). The network integrator started from the homogeneous state plus 1e-3 along the
    mode at b_c + 0.03 settles on the branch's stable large pattern there (either sign); sweeping b down it
    stays on it through b_c down to the fold and drops to the homogeneous state below the fold, while the
    homogeneous state, swept up, stays homogeneous between the fold and b_c."""
    from bifnet.network.integrate import simulate
    from bifnet.patterns.equilibria import PatternSettings, stationary_pattern_branch

    brus = load_model("brusselator")
    operator = _random_operator(brus, 6, 2, blocks=True)
    mode = _odd_mode(operator)
    params0 = brus.resolve_parameters({})
    mu = operator.spectrum().eigenvalues[mode - 1].real
    eps = params0["a"] / np.sqrt(params0["Du"] * params0["Dv"]) / mu
    model, (params, x) = _turing_point(operator, mode, {"eps": eps})
    b_c = params["b"]
    assert b_c < 1 + params["a"] ** 2
    branch = stationary_pattern_branch(model, operator, params, "b", x, mode,
                                       PatternSettings(ds=0.002, ds_max=0.05, max_steps=150, bounds=(1.5, 3.2)))
    nf = branch.engine["normal_form"]
    assert nf.criticality == "sub" and nf.cubic > 0
    speed, b, y = branch.engine["speed"], branch["b"], branch["pattern_amplitude"]
    near = [k for k in range(len(b)) if 0 < abs(y[k]) < 0.004]
    assert near
    for k in near:
        assert abs(y[k]) == pytest.approx(np.sqrt(-speed * (b[k] - b_c) / nf.cubic), rel=0.05)
    folds = [sp for sp in branch.special_points if sp.kind is SpecialKind.LP]
    assert len(folds) == 2 and all(sp.located for sp in folds)
    assert abs(folds[0].parameters["b"] - folds[1].parameters["b"]) < 1e-10
    b_fold = folds[0].parameters["b"]
    assert b_fold < b_c - 0.05
    network = build_network(model, operator, params)
    Q = np.kron(np.real(nf.u), np.real(nf.q)).reshape(6, 2)
    rng = np.random.default_rng(4)
    states = branch.engine["states"]
    stable = np.flatnonzero((branch["stable"] == 1) & (np.abs(y) > 0.1))

    def settle(b_value, y0, t_max=1000.0):
        end = simulate(network.with_parameters(b=float(b_value)), (0.0, t_max), y0, method="dopri5", rtol=1e-8,
                       atol=1e-10, stride=1000).y[-1]
        return end, end + 1e-6 * rng.standard_normal(end.shape)

    def on_branch(b_value, state):
        k = stable[np.argmin([np.max(np.abs(states[j] - state)) for j in stable])]
        X, _ = _equilibrium(network, states[k], b_value)
        return np.max(np.abs(X.reshape(6, 2) - state))

    for sign in (1.0, -1.0):
        top = b_c + 0.03
        end, state = settle(top, np.tile([params["a"], top / params["a"]], (6, 1)) + sign * 1e-3 * Q, 3000.0)
        assert np.ptp(end[:, 0]) > 1.0 and on_branch(top, end) < 1e-5
        for b_value, patterned in ((b_c - 0.02, True), (b_fold + 0.01, True), (b_fold - 0.01, False)):
            end, state = settle(b_value, state)
            assert (np.ptp(end[:, 0]) > 0.5) if patterned else (np.ptp(end[:, 0]) < 1e-4)
            if patterned:
                assert on_branch(b_value, end) < 1e-5
    state = np.tile([params["a"], b_fold / params["a"]], (6, 1)) + 1e-4 * rng.standard_normal((6, 2))
    for b_value in (b_fold + 0.01, b_c - 0.02):
        end, state = settle(b_value, state)
        assert np.ptp(end[:, 0]) < 1e-4


def test_full_network_hopf_system_at_a_transverse_hopf_point():
    """At 408 dimensions (ngnmm_ping on tvb68, eps = 8): the Hopf system of the full network, started from
    the homogeneous state at Iext_e = 4.77, converges to the transverse Hopf point of mode 68 that brentq
    finds on the growth rate of the mode Jacobian J(Lambda_68) (4.7670668), with its frequency."""
    from bifnet._blas import single_threaded_blas
    from bifnet.connectome import coupling_operator, load_connectome
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.patterns.criticality import _mode_matrices, locate_transverse_point
    from bifnet.patterns.verify import NetworkDerivatives, solve_pattern_hopf

    model = load_model("ngnmm_ping")
    operator = coupling_operator(load_connectome("tvb68"), model.coupling)
    params = model.resolve_parameters({"eps": 8.0, "Iext_e": 4.77})
    x = find_equilibrium(model, params)
    lam = operator.spectrum().eigenvalues[67]
    lo, hi = 4.75, 4.79
    guesses = [find_equilibrium(model, {**params, "Iext_e": v}, x, settle_time=0.0) for v in (lo, hi)]
    value, x_c = locate_transverse_point(model, params, "Iext_e", lam, (lo, hi), guesses)
    A, B = _mode_matrices(model, x_c, {**params, "Iext_e": value})
    ev = np.linalg.eigvals(A + lam.real * B)
    omega = float(np.max(np.abs(ev[np.argsort(np.abs(ev.real))[:2]].imag)))
    with single_threaded_blas():
        result = solve_pattern_hopf(NetworkDerivatives(model, operator, params), np.tile(x, 68),
                                    {"Iext_e": 4.77}, "Iext_e")
    assert result.ok and result.residual < 1e-9
    assert result.value == pytest.approx(value, abs=1e-9)
    assert result.omega == pytest.approx(omega, rel=1e-9)
    assert np.allclose(result.X.reshape(68, -1), x_c, atol=1e-8)
    # l1 of the full network (dense, exact tensors) = l1 of the exact mode reduction (criticality.py)
    from bifnet.patterns.criticality import transverse_normal_form
    from bifnet.patterns.verify import pattern_lyapunov_coefficient

    nf = transverse_normal_form(model, operator, {**params, "Iext_e": value}, x_c, 68, "HB")
    with single_threaded_blas():
        l1 = pattern_lyapunov_coefficient(NetworkDerivatives(model, operator, params), result.X,
                                          {"Iext_e": result.value}, result.omega)
    assert l1 == pytest.approx(nf.l1, rel=1e-6)


@pytest.mark.slow
def test_pattern_curve_step(tmp_path):
    """``kind = "pattern_curve"`` from the verified fold of the tvb68 pattern (Brusselator, mode 68): the locus
    in branches.csv (solution LP, mode 68, residual < 1e-9), its rows at the eps levels equal to the fold
    of the one-parameter pattern branch at that eps (pattern step again) to 1e-6; the figure; bad starts
    are one-line RunFileErrors."""
    import json

    import pandas as pd

    from bifnet.errors import BifnetError
    from bifnet.runs import execute_run_file

    head = """
model = "brusselator"
connectome = "tvb68"
"""
    pattern = """
[[steps]]
name = "pat"
kind = "pattern"
start = { mode = 68, b = 2.39 }
parameters = { eps = EPS }
range = { b = [2.0, 6.0] }
settings = { ds = 0.01, ds_max = 0.05, max_steps = 12 }
"""
    curve = """
[[steps]]
name = "lp"
kind = "pattern_curve"
start = "pat:LP1"
free = ["b", "eps"]
range = { b = [2.0, 6.0], eps = [0.9, 1.1] }
levels = [0.95, 1.05]
settings = { ds = 0.01, ds_max = 0.05, max_steps = 20 }
"""
    run = tmp_path / "c.toml"
    run.write_text(head + pattern.replace("EPS", "1.0") + curve)
    out = execute_run_file(run, out=tmp_path / "out")
    table = pd.read_csv(out / "branches.csv")
    locus = table[table["step"] == "lp"]
    assert set(locus["solution"]) == {"LP"} and set(locus["mode"]) == {68}
    assert locus["residual"].max() < 1e-9 and locus["eps"].between(0.9 - 0.05, 1.1 + 0.05).all()
    summary = json.loads((out / "run.json").read_text())["steps"][1]
    levels = {round(row["eps"], 12): row["b"] for row in summary["levels"]}
    assert set(levels) == {0.95, 1.05}
    assert (out / "pattern_curve_lp.png").stat().st_size > 10_000
    for eps in (0.95, 1.05):
        run.write_text(head + pattern.replace("EPS", repr(eps)))
        again = execute_run_file(run, out=tmp_path / f"out{eps}")
        points = pd.read_csv(again / "special_points.csv")
        lp = points[(points["kind"] == "LP") & points["located"]]
        assert len(lp) >= 1 and min(abs(lp["b"] - levels[eps])) < 1e-6
    for bad, message in (('start = "pat:LP1"', "step 'lp': pattern step 'pat' has no fold or Hopf point 'LP7'"),
                         ('free = ["b", "eps"]', "step 'lp': free must be [\"b\", \"<second parameter>\"]")):
        replacement = {'start = "pat:LP1"': 'start = "pat:LP7"', 'free = ["b", "eps"]': 'free = ["eps", "b"]'}[bad]
        run.write_text(head + pattern.replace("EPS", "1.0") + curve.replace(bad, replacement))
        with pytest.raises(BifnetError, match="1 step\\(s\\) failed: lp"):
            execute_run_file(run, out=tmp_path / replacement[:5])
        entry = json.loads((tmp_path / replacement[:5] / "run.json").read_text())["steps"][1]
        assert entry["error_kind"] == "RunFileError" and entry["error"].startswith(message)
