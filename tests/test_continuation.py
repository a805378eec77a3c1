"""Continuation checked against answers known independently:
closed forms (fold, Stuart-Landau Hopf) and eigenvalue crossings."""

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq

from bifnet.codegen import jacobian_function
from bifnet.continuation.branch import BranchKind, SpecialKind
from bifnet.continuation.equilibria import continue_equilibria, find_equilibrium
from bifnet.continuation.restarts import continue_from
from bifnet.continuation.settings import ContinuationSettings
from bifnet.errors import ContinuationError
from bifnet.systems import homogeneous_system


def test_fold_of_the_normal_form(toy_model):
    model = toy_model("fold")
    p = model.resolve_parameters({"mu": 1.0})
    branch = continue_equilibria(model, p, "mu", x0=[1.0],
                                 settings=ContinuationSettings(bounds={"mu": (-1.0, 2.0)}))
    folds = branch.points_of_kind(SpecialKind.LP)
    assert len(folds) == 1
    assert abs(folds[0].parameters["mu"]) < 1e-7
    assert abs(folds[0].state[0]) < 1e-4
    # along the branch x^2 = mu exactly
    np.testing.assert_allclose(branch["x"] ** 2, branch["mu"], atol=1e-9)
    # upper half stable, lower half unstable
    assert set(branch["stable"][branch["x"] > 1e-3]) == {1}
    assert set(branch["stable"][branch["x"] < -1e-3]) == {0}


@pytest.fixture(scope="module")
def stuart_landau(toy_model):
    model = toy_model("stuart_landau")
    p = model.resolve_parameters({"mu": -0.5, "omega": 0.5})
    settings = ContinuationSettings(bounds={"mu": (-0.5, 1.0), "omega": (0.1, 2.0)})
    return model, continue_equilibria(model, p, "mu", x0=[0.0, 0.0], settings=settings), settings


def test_stuart_landau_hopf_and_cycles(stuart_landau):
    model, eq, settings = stuart_landau
    (hopf,) = eq.points_of_kind(SpecialKind.HB)
    assert abs(hopf.parameters["mu"]) < 1e-7
    assert abs(hopf.period - 2 * np.pi / 0.5) < 1e-6
    cycles = continue_from(eq, "HB1", settings=settings.replace(ds=0.02, ds_max=0.1, max_steps=200))
    assert cycles.kind is BranchKind.CYCLES
    mu = cycles["mu"]
    far = mu > 0.05
    # radius sqrt(mu), period 2 pi / omega for every mu
    np.testing.assert_allclose(cycles["x_max"][far], np.sqrt(mu[far]), rtol=1e-5)
    np.testing.assert_allclose(cycles["period"], 2 * np.pi / 0.5, rtol=1e-6)
    assert np.all(cycles["stable"][far] == 1)


def test_stuart_landau_hopf_locus_is_mu_zero(stuart_landau):
    model, eq, settings = stuart_landau
    locus = continue_from(eq, "HB1", ("mu", "omega"), settings=settings.replace(ds=0.05, ds_max=0.1))
    assert locus.locus_of is SpecialKind.HB
    assert np.ptp(locus["omega"]) > 1.0
    np.testing.assert_allclose(locus["mu"], 0.0, atol=1e-8)
    np.testing.assert_allclose(locus["period"], 2 * np.pi / locus["omega"], rtol=1e-8)


# --- the reference model ---------------------------------------------------------

def _max_real_eigenvalue(model, params, x_guess):
    """Independent of AUTO: Newton for the equilibrium, numpy for the spectrum."""
    x = find_equilibrium(model, params, x_guess, settle_time=0.0)
    J = jacobian_function(homogeneous_system(model))(x, np.array([params[n] for n in model.parameter_names]))
    ev = np.linalg.eigvals(J)
    return ev[np.argmax(ev.real)], x


@pytest.fixture(scope="module")
def ping_eq15(ping):
    p = ping.resolve_parameters({"eps": 15.0})
    settings = ContinuationSettings(bounds={"Iext_e": (0.0, 40.0), "eps": (0.0, 30.0)})
    return continue_equilibria(ping, p, "Iext_e", settings=settings), settings


def test_ping_hopf_points_at_eps_15(ping, ping_eq15):
    branch, _ = ping_eq15
    hopfs = branch.points_of_kind(SpecialKind.HB)
    assert len(hopfs) == 2
    found = [h.parameters["Iext_e"] for h in hopfs]
    assert found == pytest.approx([2.87582, 11.63777], abs=1e-4)
    # independent eigenvalue-crossing computation (brentq on the largest real part)
    p = dict(branch.parameters)
    for h in hopfs:
        value = h.parameters["Iext_e"]
        guess = np.array(h.state)

        def growth(I):
            return _max_real_eigenvalue(ping, {**p, "Iext_e": I}, guess)[0].real

        root = brentq(growth, value - 0.05, value + 0.05, xtol=1e-12)
        assert abs(root - value) < 1e-6
        ev, _ = _max_real_eigenvalue(ping, {**p, "Iext_e": root}, guess)
        assert abs(h.period - 2 * np.pi / abs(ev.imag)) < 1e-5


def test_ping_stability_changes_at_hopf_points(ping_eq15):
    branch, _ = ping_eq15
    I = branch["Iext_e"]
    h1, h2 = (h.parameters["Iext_e"] for h in branch.points_of_kind(SpecialKind.HB))
    assert np.all(branch["stable"][I < h1 - 1e-3] == 1)
    assert np.all(branch["stable"][(I > h1 + 1e-3) & (I < h2 - 1e-3)] == 0)
    assert np.all(branch["stable"][I > h2 + 1e-3] == 1)


def test_ping_cycle_period_tends_to_hopf_period(ping_eq15):
    branch, settings = ping_eq15
    cycles = continue_from(branch, "HB1", settings=settings.replace(ds=0.05, ds_max=0.5, max_steps=600))
    h1 = branch.point("HB1")
    # near the Hopf point the period approaches 2 pi / omega of the critical pair
    near = np.abs(cycles["Iext_e"] - h1.parameters["Iext_e"]) < 2e-3
    assert near.sum() >= 2
    np.testing.assert_allclose(cycles["period"][near], h1.period, rtol=2e-3)
    # the closed branch ends at the other Hopf point with its period
    h2 = branch.point("HB2")
    assert cycles.status.startswith("closed")
    assert abs(cycles["Iext_e"][-1] - h2.parameters["Iext_e"]) < 1e-3
    assert abs(cycles["period"][-1] - h2.period) < 1e-2 * h2.period
    # folds of cycles are genuine: a multiplier besides the trivial one is 1
    for lpc in cycles.points_of_kind(SpecialKind.LPC):
        mags = np.sort(np.abs(np.array(lpc.eigenvalues) - 1.0))
        assert mags[1] < 1e-3


def test_ping_hopf_locus_matches_eigenvalue_crossings(ping, ping_eq15):
    branch, settings = ping_eq15
    locus = continue_from(branch, "HB1", ("Iext_e", "eps"), settings=settings.replace(ds=0.05, ds_max=0.2))
    p = dict(branch.parameters)
    for eps in (5.0, 20.0):
        order = np.argsort(locus["eps"])
        I_interp = np.interp(eps, locus["eps"][order], locus["Iext_e"][order])
        k = np.argmin(np.abs(locus["eps"] - eps))
        guess = np.array([locus[v][k] for v in ping.variable_names])

        def growth(I):
            return _max_real_eigenvalue(ping, {**p, "eps": eps, "Iext_e": I}, guess)[0].real

        root = brentq(growth, I_interp - 0.02, I_interp + 0.02, xtol=1e-12)
        assert abs(root - I_interp) < 2e-3


def test_settings_are_validated():
    with pytest.raises(ContinuationError, match="ds_min"):
        ContinuationSettings(ds_min=1.0, ds_max=0.5)
    with pytest.raises(ContinuationError, match="bounds"):
        ContinuationSettings(bounds={"eps": (2.0, 1.0)})
    with pytest.raises(ContinuationError, match="unknown setting"):
        ContinuationSettings.from_mapping({"step": 0.1})


def test_start_outside_range_is_refused(ping):
    p = ping.resolve_parameters({"eps": 15.0, "Iext_e": 50.0})
    with pytest.raises(ContinuationError, match="outside its range"):
        continue_equilibria(ping, p, "Iext_e", settings=ContinuationSettings(bounds={"Iext_e": (0.0, 40.0)}))


def test_tracing_a_callback_leaves_the_math_module_alone(toy_model):
    """bifpy traces a callback with math.exp & co. replaced process-wide by wrappers (bifpy.auto._transpile
    ._patched_math). The cycles step traces on several threads while numba compiles kernels on others: one
    run died with "module 'bifpy.auto._transpile' has no attribute 'wrapper'". Through bifnet's adapter the
    math module must be the same during a trace as outside one."""
    import math

    from bifnet.continuation import _auto

    _auto._auto()  # installs the adapter's bifpy workarounds
    from bifpy.auto import _transpile

    builtin = math.exp
    seen = []

    def func(state, parameters):
        seen.append(math.exp is builtin)
        return [parameters[0] - state[0] ** 2]

    source = _transpile.generate_equation_file(func, None, 1)
    assert "SUBROUTINE FUNC" in source.upper()
    assert seen and all(seen) and math.exp is builtin


def _bifpy_original(workaround):
    """bifpy's own function that the adapter's ``workaround`` replaced (skip where it is not installed)."""
    from bifnet.continuation import _auto

    _auto._auto()
    original = _auto._cache_state.get(workaround)
    if not original:
        pytest.skip("not installed for this bifpy version")
    return original


def test_shallow_metadata_equals_bifpys(ping_eq15, monkeypatch):
    """bifnet copies each labelled point's fort.8 header without bifpy's deep copy
    (_auto._install_shallow_metadata): on every labelled point of a cycle run the fields equal bifpy's
    own copy, and the no-record case gives the same Nones."""
    from bifpy.auto import _parsing

    original = _bifpy_original("shallow_metadata")
    shallow = _parsing._metadata_fields
    compared = []

    def both(record):
        mine, theirs = shallow(record), original(record)
        assert mine == theirs and list(mine) == list(theirs)
        compared.append(record is not None and record.all_parameters is not None)
        return theirs

    monkeypatch.setattr(_parsing, "_metadata_fields", both)
    branch, settings = ping_eq15
    continue_from(branch, "HB1", settings=settings.replace(ds=0.05, ds_max=0.5, max_steps=12))
    assert len(compared) >= 2 and all(compared)
    assert shallow(None) == original(None)


def test_fast_fort8_records_equal_bifpys(ping_eq15, monkeypatch):
    """bifnet reads fort.8's orbit records with numpy (_auto._install_fast_fort8): on every record of a
    cycle run (meshes, tangents, parameters) the result equals bifpy's own reader, number for number;
    and a record with a number AUTO wrote without its "E" goes to bifpy's reader."""
    from bifpy.auto import _parsing

    from bifnet.continuation import _auto

    original = _bifpy_original("fast_fort8")
    fast = _parsing._read_fort8_bvp_family_record
    compared = []

    def both(lines, start):
        mine = _auto._fast_fort8_record(lines, start, _parsing)
        theirs = original(lines, start)
        assert mine is not None and mine == theirs
        compared.append(mine[0].tangent is not None)
        return theirs

    monkeypatch.setattr(_parsing, "_read_fort8_bvp_family_record", both)
    branch, settings = ping_eq15
    continue_from(branch, "HB1", settings=settings.replace(ds=0.05, ds_max=0.5, max_steps=12))
    assert len(compared) >= 12 and any(compared)
    monkeypatch.setattr(_parsing, "_read_fort8_bvp_family_record", fast)
    header = "1 2 4 2 2 0 2 3 2 1 1 3 0 2 2 0\n"
    lines = [header, "0.0 1.0 2.0 0.5 3.0 2.22507-308\n", "1.0 2.0 11.0\n"]
    assert _auto._fast_fort8_record(lines, 0, _parsing) is None
    record, end = fast(lines, 0)
    assert end == 3 and record.state == ((1.0, 2.0), (3.0, 2.22507e-308)) and record.all_parameters == (1.0, 2.0, 11.0)


def test_a_branch_ends_at_its_bound_without_the_fold_past_it():
    """x' = -x + atan(2x - y + I + eps x), y' = (x - y)/2 self-coupled (eps = 3.6): equilibria x = atan(u),
    I = u - 4.6 atan(u), folds at u = -+sqrt(3.6), I = +-3.0970674873 (closed form), just past the range
    [-3, 3]. AUTO's last step went round the fold onto the middle branch (I = 3.0714, one unstable
    eigenvalue); bifnet located the fold at 3.0970674873 and reported it, and the row that replaced the
    step past the bound (the lower branch at I = 3, stable) kept the middle branch's `stable = 0`. Now the
    end row's stability is its own (the eigenvalues of the exact Jacobian there), and the fold, outside
    the range, is not reported; with the range [-3, 3.2] it is, at the closed form."""
    from bifnet.continuation.branch import SpecialKind
    from bifnet.continuation.equilibria import continue_equilibria
    from bifnet.continuation.settings import ContinuationSettings
    from bifnet.model import load_model

    model = load_model(Path(__file__).parent / "data" / "atanode.toml")
    u = -np.sqrt(3.6)
    fold = u - 4.6 * np.arctan(u)
    assert fold == pytest.approx(3.0970674873, abs=1e-10)
    for hi in (3.0, 3.2):
        params = model.resolve_parameters({"I": -3.0, "eps": 3.6})
        branch = continue_equilibria(model, params, "I", settings=ContinuationSettings(bounds={"I": (-3.0, hi)}))
        I, x = branch["I"], branch["x"]
        assert I.max() <= hi + 1e-12
        u_rows = 4.6 * x + I
        assert np.max(np.abs(x - np.arctan(u_rows))) < 1e-8
        # J = [[-1 + 5.6 g, -g], [1/2, -1/2]]: stable iff det = 0.5 - 2.3 g > 0 and trace = -1.5 + 5.6 g < 0
        g = 1.0 / (1.0 + u_rows ** 2)
        stable = ((0.5 - 2.3 * g > 0) & (-1.5 + 5.6 * g < 0)).astype(int)
        rows = np.setdiff1d(np.arange(len(branch)), [sp.index for sp in branch.special_points])  # det = 0 at LP
        assert np.array_equal(branch["stable"][rows], stable[rows])
        folds = [sp for sp in branch.special_points if sp.kind is SpecialKind.LP]
        if hi == 3.0:
            assert folds == [] and branch["stable"][-1] == 1      # the lower branch at I = 3
        else:
            assert any(sp.located and abs(sp.parameters["I"] - fold) < 1e-8 for sp in folds)
            assert all(-3.0 <= sp.parameters["I"] <= hi for sp in branch.special_points)


def test_an_unstable_equilibrium_is_found_where_the_state_settles_on_a_cycle():
    """Stuart-Landau at mu = 0.4 (the origin an unstable focus, every other state goes to the cycle): the
    settled state is on the cycle, where Newton's method finds nothing, and the search failed with "the
    homogeneous state may oscillate here". Newton's method from the start state itself reaches the origin,
    the exact equilibrium."""
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.model import load_model

    model = load_model("stuart_landau")
    x = find_equilibrium(model, model.resolve_parameters({"mu": 0.4, "eps": 0.5}))
    assert np.max(np.abs(x)) < 1e-10
