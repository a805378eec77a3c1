"""The full transverse map by continuation versus the brute-force grid (issues 3 and 11).

Grid map (issue 11, ``--grid``): the instability map at every point of the study's grid
(step 0.05: 321 x 601) from the level branches (:func:`bifnet.transverse.maps.instability_map`),
timed best-of-``--repeat``; then its unstable-mode counts against an independent brute-force solve
(:func:`bifnet.transverse.maps.brute_force_point`) at ``--check`` random grid points: the fraction
that agrees overall, at stable equilibria and at cycles, and the largest growth-rate difference.

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
     .venv/bin/python benchmarks/bench_transverse.py --grid [--connectome tvb96] [--repeat 2] [--check 400]
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
    parser.add_argument("--grid", action="store_true", help="the grid map (issue 11) and its agreement check")
    parser.add_argument("--connectome", default="tvb68")
    parser.add_argument("--repeat", type=int, default=2, help="repeats of the grid map (best reported)")
    parser.add_argument("--check", type=int, default=400, help="random grid points checked by brute force")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.grid:
        return grid_map(args)

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


def grid_map(args):
    """Issue 11: the map at every grid point, timed, and checked against brute force."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from bifnet.connectome import load_connectome
    from bifnet.continuation.branch import SpecialKind
    from bifnet.continuation.equilibria import continue_equilibria
    from bifnet.continuation.restarts import continue_cycles, ends_at_hopf
    from bifnet.continuation.settings import ContinuationSettings
    from bifnet.errors import BifnetError
    from bifnet.model import load_model
    from bifnet.transverse.curves import distinct_modes
    from bifnet.transverse.maps import EP, LC, brute_force_point, grid_axis, instability_map

    model = load_model("ngnmm_ping")
    groups = distinct_modes(load_connectome(args.connectome).row_normalised().spectrum().eigenvalues)
    lams = np.array([g.Lambda for g in groups])
    mult = np.array([len(g.modes) for g in groups])
    settings = ContinuationSettings(bounds={"Iext_e": I_RANGE, "eps": EPS_RANGE}, ds=0.05, ds_max=0.25)
    params = model.resolve_parameters({"Iext_e": 0.0})
    levels = list(np.linspace(*EPS_RANGE, args.levels + 2)[1:-1])
    t0 = time.perf_counter()
    eqs, cycles = {}, {}
    for level in levels:
        eq = continue_equilibria(model, {**params, "eps": level}, "Iext_e",
                                 settings=settings.replace(bounds={"Iext_e": I_RANGE}))
        eqs[level], cycles[level] = eq, []
        for hb in eq.points_of_kind(SpecialKind.HB):
            if not any(ends_at_hopf(c, hb) for c in cycles[level]):
                try:
                    cycles[level].append(continue_cycles(eq, hb.name, settings=settings.replace(max_steps=600)))
                except BifnetError:
                    pass
    t_levels = time.perf_counter() - t0
    x1, x2 = grid_axis(I_RANGE, GRID_STEP, "Iext_e"), grid_axis(EPS_RANGE, GRID_STEP, "eps")
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = instability_map(model, params, ("Iext_e", "eps"), x1, x2, lams, eqs, cycles, workers=args.workers)
        times.append(time.perf_counter() - t0)
    counts = np.bincount(result.solution.ravel(), minlength=3)
    print(f"{args.connectome}: {len(groups)} distinct modes; level branches ({args.levels} levels, EP + LC): "
          f"{t_levels:.1f} s")
    print(f"grid map {x1.size} x {x2.size}: best {min(times):.1f} s of {args.repeat} "
          f"({', '.join(f'{t:.1f}' for t in times)} s; {args.workers} workers); points: {counts[1]} EP, "
          f"{counts[2]} LC, {counts[0]} none")
    rng = np.random.default_rng(11)
    tally = {"all": [0, 0], "EP": [0, 0], "LC": [0, 0]}
    worst = 0.0
    brute_seconds = {EP: [], LC: [], 0: []}
    for k in rng.choice(result.solution.size, args.check, replace=False):
        r, c = divmod(int(k), x1.size)
        t0 = time.perf_counter()
        solution, rates = brute_force_point(model, {**params, "Iext_e": x1[c], "eps": x2[r]}, lams)
        brute_seconds[solution].append(time.perf_counter() - t0)
        count = lambda g: int(((g[1:] > 0) * mult[1:]).sum())  # noqa: E731
        mine = result.solution[r, c]
        same = solution == mine and (solution == 0 or count(rates) == count(result.growth_rate[r, c]))
        if solution == mine and solution:
            worst = max(worst, float(np.max(np.abs(rates - result.growth_rate[r, c]))))
        for key in ("all", {EP: "EP", LC: "LC"}.get(solution)):
            if key:
                tally[key][0] += same
                tally[key][1] += 1
        if not same:
            print(f"  differs at Iext_e = {x1[c]:.2f}, eps = {x2[r]:.2f}: map {mine} "
                  f"({count(result.growth_rate[r, c]) if mine else '-'} unstable), brute force {solution} "
                  f"({count(rates) if solution else '-'} unstable)")
    for key, (good, total) in tally.items():
        print(f"agreement ({key} points, by brute force): {good} of {total}"
              + (f" = {100 * good / total:.1f} %" if total else ""))
    print(f"largest growth-rate difference where both found the same state: {worst:.2e} /ms")
    # the baseline, measured in this run: brute force at every grid point, extrapolated from the checked points
    every = sum(brute_seconds.values(), [])
    mean = {k: float(np.mean(v if v else every)) for k, v in brute_seconds.items()}
    total = sum(counts[k] * mean[k] for k in (0, EP, LC))
    print(f"brute force per point (this run): {mean[EP] * 1e3:.0f} ms at EP ({len(brute_seconds[EP])}), "
          f"{mean[LC] * 1e3:.0f} ms at LC ({len(brute_seconds[LC])}), {mean[0] * 1e3:.0f} ms at none "
          f"({len(brute_seconds[0])}); extrapolated to the grid's {counts.sum()} points: {total:.0f} s on one core")
    print(f"ratio brute force (one core) / map ({args.workers} workers, wall): {total / min(times):.0f}x")


if __name__ == "__main__":
    main()
