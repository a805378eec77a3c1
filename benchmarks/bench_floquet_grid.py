"""Benchmark: Floquet dispersion of all 68 tvb68 modes at one oscillating point.

Compares :func:`bifnet.transverse.floquet.floquet_dispersion` with the
"brute-force" method of the reference study, measured in the same run:
``scipy.integrate.solve_ivp`` (RK45, rtol 1e-8) of the 6 + 36 variational
system in plain numpy, one solve per mode. Prints seconds per grid point for
both, their ratio, the agreement of the multipliers, and the extrapolated cost
of the study's 321 x 601 grid with half its points oscillating.

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_floquet_grid.py [--eps 15] [--iext 6] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GRID = (321, 601)
OSCILLATING_FRACTION = 0.5


def brute_force(model, cycle, lambdas, rtol=1e-8):
    """The study's method: one RK45 solve of [x; vec(Phi)] per mode, numpy callbacks."""
    from scipy.integrate import solve_ivp

    from bifnet.codegen import mode_jacobian_functions, rhs_function
    from bifnet.systems import homogeneous_system

    values = model.resolve_parameters(cycle.parameters)
    p = np.array([values[k] for k in model.parameter_names])
    f = rhs_function(homogeneous_system(model))
    A, B = mode_jacobian_functions(model)
    n = model.n_variables
    out = []
    for lam in lambdas:
        dtype = complex if np.iscomplexobj(lam) else float

        def joint(t, z, lam=lam):
            x = z[:n].real
            J = A(x, p) + lam * B(x, p)
            return np.concatenate([f(x, p).astype(dtype), (J @ z[n:].reshape(n, n)).ravel()])

        z0 = np.concatenate([cycle.x0, np.eye(n).ravel()]).astype(dtype)
        sol = solve_ivp(joint, (0.0, cycle.period), z0, method="RK45", rtol=rtol)
        out.append(np.linalg.eigvals(sol.y[n:, -1].reshape(n, n)))
    return np.array(out)


def _match(mu, ref):
    scale = np.maximum(1.0, np.abs(ref).max(axis=1))
    return max(max(np.min(np.abs(mu[k] - r)) for r in ref[k]) / scale[k] for k in range(len(ref)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=15.0)
    parser.add_argument("--iext", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    from bifnet.connectome import load_connectome
    from bifnet.model import load_model
    from bifnet.transverse.floquet import find_cycle, floquet_dispersion

    model = load_model("ngnmm_ping")
    lam = load_connectome("tvb68").row_normalised().spectrum().eigenvalues
    point = {"eps": args.eps, "Iext_e": args.iext}
    print(f"ngnmm_ping at eps = {args.eps:g}, Iext_e = {args.iext:g}; {lam.size} modes of tvb68 "
          f"(Lambda in [{np.min(np.real(lam)):.4f}, {np.max(np.real(lam)):.4f}])")

    t0 = time.perf_counter()
    cycle = find_cycle(model, point)
    floquet_dispersion(model, cycle, lam)          # compile
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    cycle = find_cycle(model, point)
    t_cycle = time.perf_counter() - t0
    print(f"cycle: period {cycle.period:.6f} ms; find_cycle {t_cycle:.2f} s "
          f"(first calls incl. sympy code generation and numba compilation: {t_compile:.1f} s, once per process)")

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        disp = floquet_dispersion(model, cycle, lam)
        times.append(time.perf_counter() - t0)
    t_fast = float(np.median(times))
    print(f"floquet_dispersion (dop853 tableau on {disp.steps}-step adaptive mesh, numba): "
          f"{t_fast:.4f} s per point (median of {args.repeat}, min {min(times):.4f})")

    t0 = time.perf_counter()
    ref = brute_force(model, cycle, lam)
    t_brute = time.perf_counter() - t0
    print(f"brute force (solve_ivp RK45 rtol 1e-8, 6+36 per mode, numpy): {t_brute:.2f} s per point "
          f"({t_brute / lam.size * 1000:.1f} ms per mode)")

    print(f"speed-up: {t_brute / t_fast:.0f}x")
    print(f"max |mu_fast - mu_brute| / max(1, |mu|max) over modes: {_match(disp.multipliers, ref):.2e} "
          f"(RK45 at rtol 1e-8 is the less accurate of the two)")

    n_points = GRID[0] * GRID[1] * OSCILLATING_FRACTION
    for name, t in (("brute force", t_brute), ("floquet_dispersion", t_fast),
                    ("floquet_dispersion + find_cycle", t_fast + t_cycle)):
        total = n_points * t
        print(f"{GRID[0]} x {GRID[1]} grid, {OSCILLATING_FRACTION:.0%} oscillating ({n_points:.0f} points), "
              f"{name}: {total / 3600:.2f} CPU hours")


if __name__ == "__main__":
    main()
