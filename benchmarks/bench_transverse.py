"""The full transverse map by continuation versus the brute-force grid (issue 3).

Continuation: every mode of tvb68, equilibria and cycles, I_ext^E in [0, 16],
eps in [0, 30] (the ``map`` step of continuation_runs/transverse_study.toml).
Brute force, measured in the same run on a sub-window of the study's grid
(step 0.05): at each grid point the homogeneous attractor by integration, then
the growth rate of every mode (eigenvalues of J(Lambda) at equilibria; at
cycles the study's method, one RK45 variational solve per mode, see
bench_floquet_grid.py). The whole grid's cost is extrapolated from the
sub-window with the fraction of oscillating points measured on a coarse grid.
Printed, never asserted.

Run: .venv/bin/python benchmarks/bench_transverse.py [--window 3] [--levels 13]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

GRID_STEP = 0.05
I_RANGE, EPS_RANGE = (0.0, 16.0), (0.0, 30.0)


def grid_point(model, params, lambdas):
    """The brute-force cost of one grid point: (solution, seconds)."""
    from bench_floquet_grid import brute_force

    from bifnet.transverse.dispersion import equilibrium_dispersion, homogeneous_attractor

    from bifnet.errors import BifnetError

    start = time.perf_counter()
    try:
        kind, state = homogeneous_attractor(model, params)
    except BifnetError:  # no periodic orbit found by shooting (e.g. chaotic): the time still counts
        return "LC", time.perf_counter() - start
    if kind == "EP":
        equilibrium_dispersion(model, params, state, lambdas)
    else:
        brute_force(model, state, lambdas)
    return kind, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=int, default=2, help="sub-window size (points per side)")
    parser.add_argument("--levels", type=int, default=13)
    parser.add_argument("--skip-map", action="store_true", help="only the brute-force part")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from bifnet.connectome import load_connectome
    from bifnet.model import load_model
    from bifnet.runs import execute_run_file

    model = load_model("ngnmm_ping")
    lambdas = load_connectome("tvb68").row_normalised().spectrum().eigenvalues

    run = f"""
model = "ngnmm_ping"
connectome = "tvb68"
[settings]
ds = 0.05
ds_max = 0.25
[[steps]]
name = "map"
kind = "transverse"
free = ["Iext_e", "eps"]
range = {{ Iext_e = [0.0, 16.0], eps = [0.0, 30.0] }}
modes = "all"
levels = {args.levels}
"""
    if args.skip_map:
        return brute(model, lambdas, args, None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "map.toml"
        path.write_text(run)
        t0 = time.perf_counter()
        out = execute_run_file(path, out=Path(tmp) / "out")
        t_cont = time.perf_counter() - t0
        import json

        summary = json.loads((out / "run.json").read_text())["steps"][0]
    print(f"continuation: all 68 modes, EP + LC, {args.levels} levels: {t_cont:.1f} s "
          f"({summary.get('curves')} transverse curves, {summary.get('cycle_crossings')} cycle crossings)")

    brute(model, lambdas, args, t_cont)


def brute(model, lambdas, args, t_cont):
    """The brute-force grid on sub-windows, extrapolated to the study's grid."""
    from bifnet.transverse.dispersion import settle

    # fraction of oscillating grid points, from a coarse grid
    coarse = [(i, e) for i in np.linspace(0.5, 15.5, 6) for e in np.linspace(1, 29, 5)]
    resting = [settle(model, model.resolve_parameters({"Iext_e": i, "eps": e}))[0] for i, e in coarse]
    oscillating = 1.0 - sum(resting) / len(resting)

    costs = {"EP": [], "LC": []}
    for centre in ((2.0, 4.0), (6.0, 15.0)):  # one resting, one oscillating window
        for a in range(args.window):
            for b in range(args.window):
                p = model.resolve_parameters({"Iext_e": centre[0] + a * GRID_STEP, "eps": centre[1] + b * GRID_STEP})
                kind, seconds = grid_point(model, p, lambdas)
                costs[kind].append(seconds)
    ep = float(np.mean(costs["EP"])) if costs["EP"] else 0.0
    lc = float(np.mean(costs["LC"])) if costs["LC"] else 0.0
    n_grid = int(round((I_RANGE[1] - I_RANGE[0]) / GRID_STEP) + 1) * int(round((EPS_RANGE[1] - EPS_RANGE[0]) / GRID_STEP) + 1)
    total = n_grid * ((1 - oscillating) * ep + oscillating * lc)
    print(f"brute force per grid point: {ep:.3f} s at equilibria ({len(costs['EP'])} measured), "
          f"{lc:.2f} s at cycles ({len(costs['LC'])} measured); oscillating fraction {oscillating:.2f}")
    print(f"brute force on the study's grid ({n_grid} points, step {GRID_STEP}): {total:.0f} s = {total / 3600:.1f} CPU-hours")
    if t_cont:
        print(f"ratio brute force / continuation: {total / t_cont:.0f}x")


if __name__ == "__main__":
    main()
