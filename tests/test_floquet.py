"""Floquet dispersion of a homogeneous limit cycle (bifnet.transverse.floquet).

Operating point: ngnmm_ping at eps = 15, Iext_e = 6, where the homogeneous
state oscillates (period about 31 ms). Answers are checked against a direct
scipy integration of the variational equations built from the numpy ``A, B``
of :mod:`bifnet.codegen`.
"""

from __future__ import annotations

import numpy as np
import pytest

from bifnet.errors import ContinuationError
from bifnet.model import load_model
from bifnet.transverse.floquet import (
    FloquetDispersion,
    HomogeneousCycle,
    cycle_from_branch,
    find_cycle,
    floquet_dispersion,
    homogeneous_floquet,
)

POINT = {"eps": 15.0, "Iext_e": 6.0}


@pytest.fixture(scope="module")
def model():
    return load_model("ngnmm_ping")


@pytest.fixture(scope="module")
def cycle(model):
    return find_cycle(model, POINT)


def _pvec(model, parameters):
    values = model.resolve_parameters(parameters)
    return np.array([values[k] for k in model.parameter_names])


def _rhs(model, p):
    from bifnet.codegen import rhs_function
    from bifnet.systems import homogeneous_system

    f = rhs_function(homogeneous_system(model))
    return lambda x: f(x, p)


def _reference_monodromy(model, cycle, Lambda):
    """Monodromy of J(Lambda) = A + Lambda B by solve_ivp on [x; vec(Phi)]."""
    from scipy.integrate import solve_ivp

    from bifnet.codegen import mode_jacobian_functions

    A, B = mode_jacobian_functions(model)
    p = _pvec(model, cycle.parameters)
    f = _rhs(model, p)
    n = model.n_variables
    dtype = complex if np.iscomplexobj(Lambda) else float

    def joint(t, z):
        x = z[:n].real
        Phi = z[n:].reshape(n, n)
        J = A(x, p) + Lambda * B(x, p)
        return np.concatenate([f(x).astype(dtype), (J @ Phi).ravel()])

    z0 = np.concatenate([cycle.x0, np.eye(n).ravel()]).astype(dtype)
    sol = solve_ivp(joint, (0.0, cycle.period), z0, method="DOP853", rtol=1e-11, atol=1e-12)
    assert sol.success
    return sol.y[n:, -1].reshape(n, n)


def _match(mu, ref):
    """Max distance of each reference multiplier to the nearest computed one."""
    return max(np.min(np.abs(mu - r)) for r in ref)


def test_find_cycle_oscillates_and_closes(model, cycle):
    from scipy.integrate import solve_ivp

    assert 30.0 < cycle.period < 40.0
    assert cycle.parameters["eps"] == 15.0 and cycle.parameters["Iext_e"] == 6.0
    f = _rhs(model, _pvec(model, cycle.parameters))
    sol = solve_ivp(lambda t, x: f(x), (0.0, cycle.period), cycle.x0, method="DOP853",
                    rtol=1e-13, atol=1e-14)
    assert np.max(np.abs(sol.y[:, -1] - cycle.x0)) < 1e-8
    # and it is a genuine oscillation, not a fixed point
    assert np.ptp(sol.y[1]) > 1.0


def test_find_cycle_rejects_equilibrium(model):
    # Iext_e = 0: the homogeneous state is a stable equilibrium (Hopf at ~2.88)
    with pytest.raises(ContinuationError, match="equilibrium"):
        find_cycle(model, {"eps": 15.0, "Iext_e": 0.0}, transient=500.0)


def test_mode_one_has_trivial_exponent(model, cycle):
    disp = floquet_dispersion(model, cycle, np.array([1.0]))
    assert np.min(np.abs(disp.exponents[0])) < 1e-6
    mu = homogeneous_floquet(model, cycle)
    assert np.min(np.abs(mu - 1.0)) < 1e-6 * cycle.period
    np.testing.assert_allclose(mu, disp.multipliers[0])


@pytest.mark.parametrize("Lambda", [-0.73, 0.3, 1.0, 0.2 + 0.3j])
def test_multipliers_match_direct_integration(model, cycle, Lambda):
    ref = np.linalg.eigvals(_reference_monodromy(model, cycle, Lambda))
    disp = floquet_dispersion(model, cycle, np.array([Lambda]))
    mu = disp.multipliers[0]
    scale = max(1.0, np.max(np.abs(ref)))
    assert _match(mu, ref) < 1e-6 * scale
    assert _match(ref, mu) < 1e-6 * scale


def test_methods_and_meshes_agree(model, cycle):
    lam = np.array([-0.73, 0.1, 0.95, 1.0])
    adaptive = floquet_dispersion(model, cycle, lam)
    uniform = floquet_dispersion(model, cycle, lam, steps=1000, method="dop853")
    rk4 = floquet_dispersion(model, cycle, lam, steps=6000, method="rk4")
    for other in (uniform, rk4):
        scale = np.maximum(1.0, np.abs(adaptive.multipliers[:, :1]))
        assert np.max(np.abs(other.multipliers - adaptive.multipliers) / scale) < 1e-8


def test_growth_rate_excludes_trivial_only_for_mode_one(model, cycle):
    lam = np.array([1.0, 0.999, -0.5])
    disp = floquet_dispersion(model, cycle, lam)
    T = cycle.period
    mags = np.sort(np.abs(disp.multipliers[0]))[::-1]
    assert disp.growth_rate[0] == pytest.approx(np.log(mags[1]) / T, rel=1e-12)
    # other modes: the largest multiplier counts
    for k in (1, 2):
        assert disp.growth_rate[k] == pytest.approx(np.log(np.max(np.abs(disp.multipliers[k]))) / T,
                                                    rel=1e-12)
    # continuity: mode with Lambda near 1 has a multiplier near the trivial one
    assert abs(disp.growth_rate[1]) < 0.01
    # frequency of the exponent that sets the growth rate
    expo = np.log(disp.multipliers[0]) / T
    best = np.argmax(np.where(np.abs(disp.multipliers[0] - 1) > 1e-6, expo.real, -np.inf))
    assert disp.frequency_hz[0] == pytest.approx(abs(expo[best].imag) / (2 * np.pi) * 1000.0)


def test_connectome_dispersion_frame(model, cycle):
    rng = np.random.default_rng(7)
    W = rng.random((12, 12))
    W = W + W.T
    np.fill_diagonal(W, 0.0)
    W = W / W.sum(axis=1, keepdims=True)
    lam = np.sort(np.linalg.eigvals(W).real)[::-1]
    disp = floquet_dispersion(model, cycle, lam)
    assert isinstance(disp, FloquetDispersion)
    assert disp.multipliers.shape == (12, 6) and disp.exponents.shape == (12, 6)
    assert np.all(np.isfinite(disp.growth_rate)) and disp.period == cycle.period
    frame = disp.to_frame()
    assert list(frame.columns) == ["mode", "Lambda", "Lambda_imag", "growth_rate", "frequency_hz", "solution"]
    assert frame["mode"].tolist() == list(range(1, 13))
    assert (frame["solution"] == "LC").all()
    np.testing.assert_allclose(frame["Lambda"], lam)
    # the first mode (Lambda = 1 up to rounding) has its trivial multiplier removed
    assert abs(lam[0] - 1.0) < 1e-12
    assert disp.growth_rate[0] < -1e-3


def test_complex_and_real_lambdas_agree(model, cycle):
    lam = np.array([-0.6, 0.4])
    real = floquet_dispersion(model, cycle, lam)
    cplx = floquet_dispersion(model, cycle, lam + 0j)
    np.testing.assert_allclose(cplx.multipliers, real.multipliers, rtol=1e-12, atol=1e-14)
    conj = floquet_dispersion(model, cycle, np.array([0.2 + 0.3j, 0.2 - 0.3j]))
    np.testing.assert_allclose(np.sort_complex(conj.multipliers[0]),
                               np.sort_complex(np.conj(conj.multipliers[1])), atol=1e-10)


def test_bad_arguments(model, cycle):
    with pytest.raises(ValueError, match="method"):
        floquet_dispersion(model, cycle, [0.5], method="euler")
    with pytest.raises(ValueError, match="steps"):
        floquet_dispersion(model, cycle, [0.5], steps=0)
    with pytest.raises(ValueError, match="Lambdas"):
        floquet_dispersion(model, cycle, [])
    with pytest.raises(ValueError, match="modes"):
        floquet_dispersion(model, cycle, [0.5, 0.2]).to_frame(modes=[1])


def test_cycle_from_branch(cycle):
    from types import SimpleNamespace

    from bifnet.continuation.branch import Branch, BranchKind

    orbit = SimpleNamespace(state=np.vstack([cycle.x0, cycle.x0 + 1.0]), normalized_time=np.array([0.0, 1.0]))
    branch = Branch(kind=BranchKind.CYCLES, name="lc@HB1", free=("Iext_e",),
                    columns={"Iext_e": np.array([5.0, 6.0]), "period": np.array([30.0, cycle.period])},
                    parameters={**cycle.parameters, "Iext_e": 5.0},
                    engine={"points": {1: SimpleNamespace(periodic_orbit=orbit)}})
    got = cycle_from_branch(branch, 1)
    assert isinstance(got, HomogeneousCycle)
    assert got.parameters["Iext_e"] == 6.0 and got.period == cycle.period
    np.testing.assert_array_equal(got.x0, cycle.x0)
    with pytest.raises(ContinuationError, match="no periodic orbit"):
        cycle_from_branch(branch, 0)


@pytest.mark.parametrize("complex_case", [False, True])
def test_mode_innermost_kernel_equals_one_mode_at_a_time(model, cycle, complex_case):
    """The vectorised ``propagate_modes`` gives the monodromies of ``propagate`` (same
    Runge-Kutta products, summed in another order)."""
    from bifnet.transverse.floquet import _kernels, _mesh, _parameter_vector, _tableau

    ker = _kernels(model)
    p = _parameter_vector(model, cycle.parameters)
    hs = _mesh(model, p, cycle.x0, cycle.period, None, 1e-8)
    c, a, b = _tableau("dop853")
    P = np.empty((hs.size, c.size + 1, model.n_variables, model.n_variables))
    ker["step_polynomials"](cycle.x0, p, hs, c, a, b, P)
    lams = np.linspace(-0.8, 1.0, 9) + (0.05j if complex_case else 0.0)
    one, many = (np.empty((lams.size, 6, 6), dtype=lams.dtype) for _ in range(2))
    ker["propagate"](lams, P, one)
    ker["propagate_modes"](lams, P, many)
    assert np.max(np.abs(many - one)) < 1e-12 * max(1.0, np.max(np.abs(one)))


def test_single_mode_kernel_equals_polynomial_propagators(model, cycle):
    """``monodromy_one`` (the joint Runge-Kutta system of x and Phi for one Lambda, used for shooting)
    gives the monodromy of the polynomial propagators ``step_polynomials`` + ``propagate``, and
    both are close to an independent scipy integration of the variational equation (A and B
    lambdified from sympy)."""
    from scipy.integrate import solve_ivp

    from bifnet.transverse.floquet import _kernels, _mesh, _parameter_vector, _tableau
    from bifnet.transverse.maps import batched_functions

    ker = _kernels(model)
    fns = batched_functions(model, "Iext_e")
    p = _parameter_vector(model, cycle.parameters)
    hs = _mesh(model, p, cycle.x0, cycle.period, None, 1e-8)
    c, a, b = _tableau("dop853")
    n = model.n_variables
    P = np.empty((hs.size, c.size + 1, n, n))
    ker["step_polynomials"](cycle.x0, p, hs, c, a, b, P)
    for lam in (1.0, -0.73):
        poly = np.empty((1, n, n))
        ker["propagate"](np.array([lam]), P, poly)
        one = np.empty((n, n))
        ker["monodromy_one"](cycle.x0, p, hs, c, a, b, lam, one)
        scale = max(1.0, np.max(np.abs(poly)))
        assert np.max(np.abs(one - poly[0])) < 1e-11 * scale

        def rhs(t, z, lam=lam):
            x, Phi = z[:n], z[n:].reshape(n, n)
            J = fns["A"](x[None], p[None])[0] + lam * fns["B"](x[None], p[None])[0]
            return np.concatenate([fns["f"](x[None], p[None])[0], (J @ Phi).ravel()])

        sol = solve_ivp(rhs, (0.0, cycle.period), np.concatenate([cycle.x0, np.eye(n).ravel()]), method="DOP853",
                        rtol=1e-11, atol=1e-12)
        assert np.max(np.abs(sol.y[n:, -1].reshape(n, n) - one)) < 1e-6 * scale


def test_compiled_shooting_converges_to_the_cycle(model, cycle):
    """The map's shooting (the compiled ``shoot`` kernel) converges from a perturbed guess to the cycle
    of ``find_cycle``: chord iterations with the cycle's monodromy, and Newton without one; the
    period to 1e-7 and the return error below the tolerance."""
    from bifnet.transverse.floquet import _integrate, _monodromies
    from bifnet.transverse.maps import _CYCLE_TOL, _shoot

    p = _pvec(model, cycle.parameters)
    x0, T = np.asarray(cycle.x0, dtype=float), float(cycle.period)
    _, hs, _ = _integrate(model, p, x0, T, 1e-11)
    M = _monodromies(model, p, x0, hs, np.array([1.0]), "dop853")[0][0]
    for monodromy in (M, None):
        got = _shoot(model, p, x0 * (1 + 1e-4), T * 1.002, monodromy)
        assert got is not None
        x, period, amplitude = got
        assert abs(period - T) < 1e-7 * T
        xT, _, _ = _integrate(model, p, x, period, 1e-12)
        assert np.max(np.abs(xT - x) / amplitude) < 10 * _CYCLE_TOL
