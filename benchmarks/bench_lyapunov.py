"""Benchmark: Lyapunov spectrum of a ~90-node network, adaptive (dopri5) against fixed-step RK4.

    python benchmarks/bench_lyapunov.py [--full] [--quick] [-k K] [--threads T] [--repeats R]
                                        [--eps EPS] [--iext IEXT] [--precision double|single|both]

The study's size is 90 exponents over 7000 ms after a 300 ms transient on
tvb96 (``--full``; the RK4 run then takes minutes). By default the horizon
is 1000 ms after 300 ms; ``--quick``: 100 ms after 10 ms. Printed, all
measured in this run (ratios against baselines of the same run, never
asserted; the best of ``--repeats`` repeats, wall and CPU time):

* the fused RK4 stepper against the generic tangent loop it replaced, on a
  short run, with the largest difference of their exponents;
* ``method="rk4"`` (dt = 0.01 ms) and ``method="dopri5"`` (rtol 1e-6,
  atol 1e-9, the state's error norm) over the horizon: wall time, steps,
  speed-up, and the largest difference of the exponents of the two, next
  to the spread between two dopri5 runs from different initial tangent
  vectors (seed 2 instead of 1) and to dopri5 with the tangent vectors in
  the error norm (``tangent_error=True``);
* with ``--precision both`` also single precision (float32 tangent vectors).

The default point (eps = 8, Iext_e = 5) is the one the project has always
timed; ``--eps 9 --iext 12`` is a point of the study's sweep with positive
exponents and short steps (spikes), the slowest part of that sweep.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _timed(function, repeats):
    """``(result, best wall s, CPU s of that repeat)`` over ``repeats`` calls."""
    best = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = function()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or wall < best[1]:
            best = (result, wall, cpu)
    return best


def main():
    from bifnet.analysis.lyapunov import _benettin_logs, _lyapunov_spectrum_reference, kaplan_yorke_dimension
    from bifnet.model import load_model
    from bifnet.network import build_network, homogeneous_initial_state

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="7000 ms after 300 ms (the study's size)")
    parser.add_argument("--quick", action="store_true", help="100 ms after 10 ms")
    parser.add_argument("-k", type=int, default=90)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each timing (default 2, 1 with --full)")
    parser.add_argument("--baseline-ms", type=float, default=3.0, help="model ms of the generic-loop comparison")
    parser.add_argument("--eps", type=float, default=8.0)
    parser.add_argument("--iext", type=float, default=5.0)
    parser.add_argument("--precision", choices=["double", "single", "both"], default="double")
    args = parser.parse_args()
    t_max, transient = (7000.0, 300.0) if args.full else (100.0, 10.0) if args.quick else (1000.0, 300.0)
    repeats = args.repeats or (1 if args.full else 2)

    model = load_model("ngnmm_ping")
    try:
        from bifnet.connectome import load_connectome

        W = load_connectome("tvb96")
        name = "tvb96"
    except Exception:
        rng = np.random.default_rng(0)
        A = rng.random((90, 90))
        W, name = A + A.T, "random symmetric N=90"
    params = {"eps": args.eps, "Iext_e": args.iext}
    net = build_network(model, W, params)
    y0 = homogeneous_initial_state(net, model.default_state(), "random", 1e-3, rng=0)
    print(f"{name}: D = {net.dimension}, k = {args.k}, {params}, {t_max:g} ms after {transient:g} ms; "
          f"best of {repeats} repeat(s) (a shared machine: wall time counts other jobs' load)")

    def spectrum(method, precision="double", rng=1, **kwargs):
        logs, block, _, stats = _benettin_logs(net, args.k, t_max, transient, 0.01, 1.0, y0, rng, args.threads,
                                               precision=precision, method=method, **kwargs)
        return np.sort(logs.sum(axis=0) / (logs.shape[0] * block))[::-1], stats

    # compile every path first
    for method in ("rk4", "dopri5"):
        _benettin_logs(net, args.k, 0.5, 0.0, 0.01, 0.5, y0, 1, args.threads, method=method)
    _lyapunov_spectrum_reference(net, 2, t_max=0.5, dt=0.01, y0=y0, rng=1)

    # the generic tangent loop on a short run (the implementation before the fused stepper)
    short = args.baseline_ms
    ref, ref_wall, _ = _timed(lambda: _lyapunov_spectrum_reference(net, args.k, t_max=short, dt=0.01, y0=y0, rng=1),
                              repeats)
    (new, _), new_wall, _ = _timed(lambda: _short(net, args, short, y0), repeats)
    print(f"RK4, {short:g} ms: generic loop {ref_wall / short * 1000:.1f} ms, fused stepper "
          f"{new_wall / short * 1000:.1f} ms of wall time per model ms (x{ref_wall / new_wall:.1f}); "
          f"max |difference of exponents| {np.max(np.abs(ref - new)):.1e} 1/ms")

    precisions = ["double", "single"] if args.precision == "both" else [args.precision]
    results = {}
    for precision in precisions:
        if precision == "single":
            for method in ("rk4", "dopri5"):
                _benettin_logs(net, args.k, 0.5, 0.0, 0.01, 0.5, y0, 1, args.threads, precision="single",
                               method=method)
        runs = {}
        for method in ("rk4", "dopri5"):
            (le, stats), wall, cpu = _timed(lambda: spectrum(method, precision), repeats)
            runs[method] = (le, stats, wall, cpu)
            steps = stats["n_steps"]
            extra = (f", {stats['n_rejected']} rejected, mean step {stats['mean_step_ms']:.3f} ms"
                     if method == "dopri5" else f" of {stats['dt']:g} ms")
            print(f"[{precision}] {method:6s}: {wall:7.2f} s wall, {cpu:7.2f} s CPU ({stats['threads']} thread(s)); "
                  f"{steps} steps{extra}; largest exponents {np.array2string(le[:3], precision=5)} 1/ms, "
                  f"Kaplan-Yorke dimension {kaplan_yorke_dimension(le):.3f}")
        (rk4, _, rk4_wall, rk4_cpu), (dp, dp_stats, dp_wall, dp_cpu) = runs["rk4"], runs["dopri5"]
        full = 7300.0 / (t_max + transient)
        print(f"[{precision}] dopri5 x{rk4_wall / dp_wall:.1f} faster than rk4 (dt = 0.01) in wall time, "
              f"x{rk4_cpu / dp_cpu:.1f} in CPU time"
              + ("" if args.full else f"; the full 7000 + 300 ms at this rate: dopri5 ~{dp_wall * full:.0f} s, "
                 f"rk4 ~{rk4_wall * full:.0f} s"))
        print(f"[{precision}] dopri5's largest tangent error estimate {dp_stats['tangent_error_norm_max']:.2g} "
              f"(1 = the tolerance; {dp_stats['steps_tangent_error_over_1']} of the "
              f"{dp_stats['steps_tangent_error_checked']} steps where it was evaluated above)")
        results[precision] = runs

    le_rk4, le_dp = results["double" if "double" in results else precisions[0]]["rk4"][0], \
        results["double" if "double" in results else precisions[0]]["dopri5"][0]
    other, _ = spectrum("dopri5", rng=2)
    (checked, checked_stats), checked_wall, _ = _timed(lambda: spectrum("dopri5", tangent_error=True), 1)
    spread = np.max(np.abs(other - le_dp))
    print(f"max |dopri5 - rk4| = {np.max(np.abs(le_dp - le_rk4)):.1e} 1/ms; max |dopri5 seed 2 - dopri5 seed 1| = "
          f"{spread:.1e} 1/ms (the spread from other initial tangent vectors); max |dopri5 with tangent_error - "
          f"dopri5| = {np.max(np.abs(checked - le_dp)):.1e} 1/ms ({checked_wall:.2f} s, "
          f"{checked_stats['n_steps']} steps)")
    if len(results) == 2:
        for method in ("rk4", "dopri5"):
            d = np.max(np.abs(results["single"][method][0] - results["double"][method][0]))
            print(f"{method}: max |single - double| = {d:.1e} 1/ms; single x"
                  f"{results['double'][method][2] / results['single'][method][2]:.2f} faster")


def _short(net, args, short, y0):
    from bifnet.analysis.lyapunov import _benettin_logs

    logs, block, _, stats = _benettin_logs(net, args.k, short, 0.0, 0.01, 1.0, y0, 1, args.threads)
    return np.sort(logs.sum(axis=0) / (logs.shape[0] * block))[::-1], stats


if __name__ == "__main__":
    main()
