"""Benchmark: homogeneous Lyapunov grids, vectorised kernel vs one lyapunov_spectrum per point.

    python benchmarks/bench_homogeneous_lyapunov.py [--points 128] [--horizon 300] [--repeats 3]
                                                   [--threads 1] [--study-points 0]

Both paths compute the 6 exponents of the homogeneous ngnmm_ping node on points of the study's
window (Iext_e 8..12, eps 9..15), RK4 at dt = 0.01 ms, QR every 1 ms, for ``--horizon`` model ms
(transient included). Printed, each the best of ``--repeats`` runs (the machine may be shared):
wall time per point per model ms of

* the per-point path (:func:`bifnet.analysis.lyapunov.lyapunov_spectrum` on
  :func:`bifnet.network.homogeneous_network`, what a sweep ran per task before), on 4 points;
* the vectorised kernel (:func:`bifnet.analysis.lyapunov_grid.homogeneous_lyapunov_spectra`)
  on ``--points`` points, ``--threads`` threads;

their ratio, the largest difference of the exponents on the shared points, and the time
extrapolated to the study's map (81 x 121 points, 10 000 ms after 800 ms) on 2 cores.
``--study-points N`` also times the first N points of the study's grid at the full horizon
(10 800 ms), a check of the extrapolation (with fixed steps the cost does not depend on the
dynamics).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_of(repeats, function):
    """``(best wall time, CPU time of that run, value)`` over ``repeats`` runs."""
    best, cpu, value = np.inf, np.inf, None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        value = function()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return best, cpu, value


def main():
    from bifnet.analysis.lyapunov import lyapunov_spectrum
    from bifnet.analysis.lyapunov_grid import homogeneous_lyapunov_spectra
    from bifnet.model import load_model
    from bifnet.network import homogeneous_network

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=128)
    parser.add_argument("--horizon", type=float, default=300.0, help="model ms per run (transient included)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--study-points", type=int, default=0)
    args = parser.parse_args()

    model = load_model("ngnmm_ping")
    rng = np.random.default_rng(0)
    points = {"Iext_e": rng.uniform(8.0, 12.0, args.points), "eps": rng.uniform(9.0, 15.0, args.points)}
    transient = 0.2 * args.horizon
    kwargs = dict(t_max=args.horizon - transient, transient=transient, dt=0.01, rng=1)
    # compile / load both paths
    homogeneous_lyapunov_spectra(model, {"eps": [15.0], "Iext_e": [6.0]}, t_max=1.0)
    lyapunov_spectrum(homogeneous_network(model, {"eps": 15.0, "Iext_e": 6.0}), 6, t_max=1.0)

    shared = 4

    def per_point():
        return np.array([lyapunov_spectrum(homogeneous_network(model, {"eps": points["eps"][i],
                                                                        "Iext_e": points["Iext_e"][i]}), 6, **kwargs)
                         for i in range(shared)])

    slow, slow_cpu, reference = best_of(args.repeats, per_point)
    fast, fast_cpu, batch = best_of(args.repeats, lambda: homogeneous_lyapunov_spectra(
        model, points, threads=args.threads, **kwargs))
    slow_per = slow / shared / args.horizon
    fast_per = fast / args.points / args.horizon
    print(f"homogeneous ngnmm_ping, 6 exponents, dt = 0.01 ms, {args.horizon:g} model ms per point, best of "
          f"{args.repeats}:")
    print(f"  per point (lyapunov_spectrum): {slow_per * 1e6:.1f} us of wall time per point per model ms "
          f"({slow_per * 10800:.2f} s per point of 10 800 ms; CPU {slow_cpu / slow:.0%} of wall)")
    print(f"  vectorised kernel ({args.points} points, {args.threads} thread(s)): {fast_per * 1e6:.2f} us "
          f"({fast_per * 10800:.3f} s per point of 10 800 ms; CPU {fast_cpu / fast:.0%} of wall)")
    slow_cpu_per, fast_cpu_per = slow_cpu / shared / args.horizon, fast_cpu / args.points / args.horizon
    print(f"  ratio per-point / vectorised: x{slow_per / fast_per:.0f} in wall time, x{slow_cpu_per / fast_cpu_per:.0f}"
          f" in CPU time; max |difference of exponents| on "
          f"{shared} shared points: {np.max(np.abs(reference - batch[:shared])):.1e} 1/ms")
    study = 81 * 121
    cores = 2
    print(f"  study map ({study} points x 10 800 ms) on {cores} cores, extrapolated: vectorised "
          f"{fast_per * 10800 * study / cores / 60:.1f} min from wall time, "
          f"{fast_cpu_per * 10800 * study / cores / 60:.1f} min from CPU time (2 free cores); per point "
          f"{slow_per * 10800 * study / cores / 3600:.1f} h")
    if args.study_points:
        n = args.study_points
        I = np.round(np.arange(8.0, 12.0 + 1e-9, 0.05), 10)
        e = np.round(np.arange(9.0, 15.0 + 1e-9, 0.05), 10)
        grid_I, grid_e = np.meshgrid(I, e, indexing="ij")
        subset = {"Iext_e": grid_I.ravel()[:n], "eps": grid_e.ravel()[:n]}
        wall, _, le = best_of(args.repeats, lambda: homogeneous_lyapunov_spectra(
            model, subset, t_max=10000.0, transient=800.0, dt=0.01, rng=1, threads=args.threads))
        print(f"  first {n} points of the study grid at 10 000 ms after 800 ms: {wall:.2f} s "
              f"({wall / n:.3f} s per point, {args.threads} thread(s)) -> full map on {cores} cores "
              f"~ {wall / n * study / cores / 60:.1f} min; largest exponent there {np.nanmax(le[:, 0]):.4f} 1/ms")


if __name__ == "__main__":
    main()
