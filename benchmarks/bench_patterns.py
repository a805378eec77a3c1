"""Benchmark: full-network equilibrium continuation (bifnet.patterns.equilibria) on tvb68 / tvb96.

Two measurements, each repeated (best of the repeats is printed; the machine is shared):

* a stationary pattern branch of the Brusselator (2 variables, diffusive coupling) from the
  Turing branch point of the largest Laplacian mode, ``points`` points in total;
* the cost per continuation point at the size of ngnmm_ping on the same connectome
  (6 variables: 408 dimensions on tvb68): the full-network homogeneous equilibrium branch
  continued in ``Iext_e`` with the same corrector, tangent and dense eigenvalues.

Also times ``eigvals`` of the dense Jacobian with numpy's OpenBLAS on 1 thread and on its default
number of threads. Run from the repository root::

    /work/main/.venv/bin/python benchmarks/bench_patterns.py [--connectome tvb68] [--points 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connectome", default="tvb68")
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from bifnet.connectome import coupling_operator, load_connectome
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.model import load_model
    from bifnet.patterns.criticality import locate_transverse_point
    from bifnet.patterns.equilibria import (NetworkProblem, PatternSettings, continue_network_equilibria,
                                            one_blas_thread, stationary_pattern_branch)

    connectome = load_connectome(args.connectome)
    # 1. Brusselator pattern branch
    brus = load_model("brusselator")
    op = coupling_operator(connectome, brus.coupling)
    lam = np.real(op.spectrum().eigenvalues)
    mode = int(np.argmax(lam)) + 1
    params = brus.resolve_parameters({})
    params["eps"] = 0.53 / lam[mode - 1]          # eps mu at the minimum of the Turing curve (Dv = 8)
    a, Du, Dv, eps = params["a"], params["Du"], params["Dv"], params["eps"]
    b_c = 1 + eps * Du * lam[mode - 1] + Du * a ** 2 / Dv + a ** 2 / (eps * Dv * lam[mode - 1])
    x_lo = find_equilibrium(brus, {**params, "b": b_c - 0.02})
    x_hi = find_equilibrium(brus, {**params, "b": b_c + 0.02}, x_lo, settle_time=0.0)
    value, x = locate_transverse_point(brus, params, "b", lam[mode - 1], (b_c - 0.02, b_c + 0.02), (x_lo, x_hi))
    params["b"] = value
    settings = PatternSettings(ds=0.01, ds_max=0.05, max_steps=args.points // 2, bounds=(0.0, 10.0))
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        branch = stationary_pattern_branch(brus, op, params, "b", x, mode, settings)
        times.append(time.perf_counter() - t)
    N = connectome.n_regions
    print(f"brusselator {args.connectome} ({2 * N} dims), mode {mode}: {len(branch)} points in "
          f"{min(times):.2f} s (best of {args.repeat}; all {', '.join(f'{v:.2f}' for v in times)}); "
          f"max residual {np.max(branch['residual']):.2g}")

    # 2. per-point cost at the ngnmm size
    ping = load_model("ngnmm_ping")
    op6 = coupling_operator(connectome, ping.coupling)
    p6 = ping.resolve_parameters({"eps": 8.0, "Iext_e": 1.0})
    x6 = find_equilibrium(ping, p6)
    problem = NetworkProblem(ping, op6, p6, "Iext_e")
    X = np.tile(x6, N)
    z0 = np.concatenate([X, [1.0]])
    t0 = np.zeros_like(z0)
    t0[-1] = 1.0
    steps = 50
    per = []
    for _ in range(args.repeat):
        with one_blas_thread():
            t = time.perf_counter()
            pts, res, status = continue_network_equilibria(problem, z0, t0, PatternSettings(
                ds=0.01, ds_max=0.02, max_steps=steps, bounds=(0.0, 3.0)))
            for z in pts:
                np.linalg.eigvals(problem.DX(z[:-1], z[-1]))
            per.append((time.perf_counter() - t) / len(pts))
    print(f"ngnmm_ping {args.connectome} ({6 * N} dims): {min(per) * 1000:.0f} ms per point with its "
          f"eigenvalues (best of {args.repeat}; {len(pts)} points, max residual {np.max(res):.2g}) -> "
          f"{args.points} points in {min(per) * args.points:.1f} s")
    J = problem.DX(X, 1.0)
    for label, context in (("1 thread", one_blas_thread), ("default threads", None)):
        best = np.inf
        for _ in range(args.repeat):
            if context is None:
                t = time.perf_counter()
                np.linalg.eigvals(J)
            else:
                with context():
                    t = time.perf_counter()
                    np.linalg.eigvals(J)
            best = min(best, time.perf_counter() - t)
        print(f"eigvals of the {6 * N}-dim network Jacobian, OpenBLAS {label}: {best:.3f} s")


if __name__ == "__main__":
    main()
