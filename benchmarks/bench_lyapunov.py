"""Benchmark: Lyapunov spectrum of a ~90-node network (90 exponents, 7000 ms after 300 ms).

    python benchmarks/bench_lyapunov.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    from bifnet.analysis.lyapunov import kaplan_yorke_dimension, lyapunov_spectrum
    from bifnet.model import load_model
    from bifnet.network import build_network, homogeneous_initial_state

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 ms after 10 ms (timing extrapolated)")
    parser.add_argument("-k", type=int, default=90)
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
    lyapunov_spectrum(net, 2, t_max=0.5, dt=0.01, y0=y0, rng=0)  # compile
    t0 = time.perf_counter()
    le = lyapunov_spectrum(net, args.k, t_max=t_max, transient=transient, dt=0.01, y0=y0, rng=1)
    wall = time.perf_counter() - t0
    per_ms = wall / (t_max + transient)
    print(f"{name}: D = {net.dimension}, k = {args.k}, {t_max:g} ms after {transient:g} ms, dt = 0.01: "
          f"{wall:.2f} s ({per_ms * 1000:.1f} ms of wall time per model ms; "
          f"full 7300 ms run ~ {per_ms * 7300 / 60:.1f} min)")
    print(f"largest exponents (1/ms): {np.array2string(le[:5], precision=4)}; "
          f"Kaplan-Yorke dimension {kaplan_yorke_dimension(le):.2f}")


if __name__ == "__main__":
    main()
