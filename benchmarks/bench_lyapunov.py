"""Benchmark: Lyapunov spectrum of a ~90-node network (90 exponents, 7000 ms after 300 ms).

    python benchmarks/bench_lyapunov.py [--quick] [-k K] [--threads T] [--precision double|single|both]

Prints the wall time per model ms of :func:`lyapunov_spectrum` (the fused
network stepper), its CPU time per RK4 step (all threads: on a shared machine
the wall time also counts other jobs' load) and, as the baseline measured in the same run, of the
generic tangent loop it replaced (``_lyapunov_spectrum_reference``, one
thread) on a short run, with the largest difference of the exponents of the
two on that short run. ``--quick``: 100 ms after 10 ms, timing extrapolated.
With ``--precision both`` (the default) the full run is made in double and
in single precision (float32 tangent vectors), and the largest difference
of their exponents is printed next to the difference another set of
initial tangent vectors makes (double, seed 2 instead of 1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    from bifnet.analysis.lyapunov import _lyapunov_spectrum_reference, kaplan_yorke_dimension, lyapunov_spectrum
    from bifnet.model import load_model
    from bifnet.network import build_network, homogeneous_initial_state

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 ms after 10 ms (timing extrapolated)")
    parser.add_argument("-k", type=int, default=90)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--baseline-ms", type=float, default=3.0, help="model ms of the baseline comparison run")
    parser.add_argument("--precision", choices=["double", "single", "both"], default="both")
    args = parser.parse_args()
    t_max, transient = (100.0, 10.0) if args.quick else (7000.0, 300.0)

    model = load_model("ngnmm_ping")
    try:
        from bifnet.connectome import load_connectome

        W = load_connectome("tvb96")
        name = "tvb96"
    except Exception:
        rng = np.random.default_rng(0)
        A = rng.random((90, 90))
        W, name = A + A.T, "random symmetric N=90"
    params = {"eps": 8.0, "Iext_e": 5.0}
    net = build_network(model, W, params)
    y0 = homogeneous_initial_state(net, model.default_state(), "random", 1e-3, rng=0)
    common = dict(dt=0.01, y0=y0, rng=1)
    # compile both paths
    lyapunov_spectrum(net, args.k, t_max=0.5, threads=args.threads, **common)
    _lyapunov_spectrum_reference(net, 2, t_max=0.5, **common)

    # baseline in the same run: the generic tangent loop on a short run
    short = args.baseline_ms
    t0 = time.perf_counter()
    ref = _lyapunov_spectrum_reference(net, args.k, t_max=short, **common)
    ref_per_ms = (time.perf_counter() - t0) / short
    t0 = time.perf_counter()
    new = lyapunov_spectrum(net, args.k, t_max=short, threads=args.threads, **common)
    new_per_ms = (time.perf_counter() - t0) / short
    print(f"{name}: D = {net.dimension}, k = {args.k}, dt = 0.01, {short:g} ms: generic loop "
          f"{ref_per_ms * 1000:.1f} ms, fused stepper {new_per_ms * 1000:.1f} ms of wall time per model ms "
          f"(x{ref_per_ms / new_per_ms:.1f}); max |difference of exponents| {np.max(np.abs(ref - new)):.1e} 1/ms")

    precisions = ["double", "single"] if args.precision == "both" else [args.precision]
    results = {}
    for precision in precisions:
        lyapunov_spectrum(net, args.k, t_max=0.5, threads=args.threads, precision=precision, **common)  # compile
        t0 = time.perf_counter()
        c0 = time.process_time()
        le = lyapunov_spectrum(net, args.k, t_max=t_max, transient=transient, threads=args.threads,
                               precision=precision, **common)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        results[precision] = le
        per_ms = wall / (t_max + transient)
        steps = (t_max + transient) / common["dt"]
        print(f"[{precision}] per RK4 step (dt = {common['dt']:g} ms, QR steps (every 1 ms) included): "
              f"{cpu / steps * 1e6:.0f} us of CPU (all threads), {wall / steps * 1e6:.0f} us of wall time")
        print(f"[{precision}] {t_max:g} ms after {transient:g} ms: {wall:.2f} s = {wall / 60:.2f} min "
              f"({per_ms * 1000:.1f} ms of wall time per model ms, x{ref_per_ms / per_ms:.1f} vs the generic loop; "
              f"full 7300 ms run ~ {per_ms * 7300 / 60:.2f} min, generic loop ~ {ref_per_ms * 7300 / 60:.1f} min)")
        print(f"[{precision}] largest exponents (1/ms): {np.array2string(le[:5], precision=5)}; "
              f"Kaplan-Yorke dimension {kaplan_yorke_dimension(le):.3f}")
    if len(results) == 2:
        other = lyapunov_spectrum(net, args.k, t_max=t_max, transient=transient, threads=args.threads,
                                  **{**common, "rng": 2})
        print(f"max |single - double| = {np.max(np.abs(results['single'] - results['double'])):.1e} 1/ms; "
              f"max |double seed 2 - double seed 1| = {np.max(np.abs(other - results['double'])):.1e} 1/ms "
              f"(the statistical spread the precision is compared with)")


if __name__ == "__main__":
    main()
