"""Benchmark: full-network continuation (bifnet.patterns.equilibria and .cycles) on tvb68 / tvb96.

Measurements (best of the repeats is printed where repeated; the machine is shared):

* a stationary pattern branch of the Brusselator (2 variables, diffusive coupling) from the
  Turing branch point of the largest Laplacian mode, ``points`` points in total;
* the cost per continuation point at the size of ngnmm_ping on the same connectome
  (6 variables: 408 dimensions on tvb68): the full-network homogeneous equilibrium branch
  continued in ``Iext_e`` with the same corrector, tangent and dense eigenvalues.

Also times ``eigvals`` of the dense Jacobian with numpy's OpenBLAS on 1 thread and on its default
number of threads.

``--cycles K`` (0 skips it; ``--only-cycles`` skips the rest): an oscillatory pattern branch of ``K``
periodic orbits of ngnmm_ping on the connectome (eps = 8, from the transverse Hopf point of the most
negative mode), shooting with the whole monodromy matrix and all Floquet multipliers, once; with
baselines measured in the same run at its first orbit: one Newton–Krylov iteration (GMRES on
Jacobian–vector products, one tangent integration each), the monodromy by forward differences of the
flow map (one state integration per column) against the tangent blocks, and the 10 multipliers of
largest modulus by Arnoldi against all of them from the dense matrix. Run from the repository root::

    /work/main/.venv/bin/python benchmarks/bench_patterns.py [--connectome tvb68] [--points 200] [--repeat 3]
        [--cycles 100] [--only-cycles]
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
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--only-cycles", action="store_true")
    args = parser.parse_args()
    if args.cycles:
        cycles_benchmark(args.connectome, args.cycles)
    if args.only_cycles:
        return

    from bifnet.connectome import coupling_operator, load_connectome
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.model import load_model
    from bifnet.patterns.criticality import locate_transverse_point
    from bifnet._blas import single_threaded_blas
    from bifnet.patterns.equilibria import (NetworkProblem, PatternSettings, continue_network_equilibria,
                                            stationary_pattern_branch)

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
        with single_threaded_blas():
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
    for label, context in (("1 thread", single_threaded_blas), ("default threads", None)):
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


def cycles_benchmark(name: str, count: int) -> None:
    import scipy.sparse.linalg as sla

    from bifnet.connectome import coupling_operator, load_connectome
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.model import load_model
    from bifnet.patterns import cycles
    from bifnet.patterns.criticality import locate_transverse_point
    from bifnet._blas import single_threaded_blas

    ping = load_model("ngnmm_ping")
    connectome = load_connectome(name)
    op = coupling_operator(connectome, ping.coupling)
    lam = np.real(op.spectrum().eigenvalues)
    mode = int(np.argmin(lam)) + 1
    params = ping.resolve_parameters({"eps": 8.0})
    lo, hi = 4.0, 6.0
    x_lo = find_equilibrium(ping, {**params, "Iext_e": lo})
    x_hi = find_equilibrium(ping, {**params, "Iext_e": hi}, x_lo, settle_time=0.0)
    value, x = locate_transverse_point(ping, params, "Iext_e", lam[mode - 1], (lo, hi), (x_lo, x_hi))
    params["Iext_e"] = value
    # the continuation alone: re-solving its NS points (54 on 100 orbits) is measured in docs/engine.md
    settings = cycles.CycleSettings(ds=0.05, ds_max=0.5, max_steps=count - 1, bounds=(4.0, 60.0),
                                    verification_budget=0)
    t = time.perf_counter()
    branch = cycles.oscillatory_pattern_branch(ping, op, params, "Iext_e", x, mode, settings)
    wall = time.perf_counter() - t
    rows = slice(1, None)
    D = 6 * connectome.n_regions
    print(f"oscillatory pattern, ngnmm_ping {name} ({D} dims), mode {mode}, Hopf at Iext_e = {value:.7f}: "
          f"{len(branch) - 1} orbits in {wall:.1f} s ({wall / (len(branch) - 1):.2f} s per orbit; status "
          f"{branch.status}); Iext_e up to {branch['Iext_e'][-1]:.4f}, period {branch['period'][1]:.3f} -> "
          f"{branch['period'][-1]:.3f} ms; max return error (DOPRI5) {np.nanmax(branch['return_error'][rows]):.2g}, "
          f"max |mu_trivial - 1| {np.nanmax(branch['trivial_error'][rows]):.2g}, unstable multipliers "
          f"{int(branch['n_unstable'][1])}..{int(branch['n_unstable'][-1])}, special points "
          f"{[sp.name for sp in branch.special_points]}")
    # baselines at the first orbit
    problem = cycles.ShootingProblem(ping, op, {**params, "Iext_e": branch["Iext_e"][1]}, "Iext_e", settings.dt)
    X, T, p = branch.engine["states"][1].ravel(), branch["period"][1], branch["Iext_e"][1]
    S = problem.steps(T)
    with single_threaded_blas():
        t = time.perf_counter()
        problem.flow(X, T, p, S)
        t_period = time.perf_counter() - t
        t = time.perf_counter()
        problem.tangent(X, T, p, S, np.ones(D))
        t_jvp = time.perf_counter() - t
        t = time.perf_counter()
        M = problem.monodromy(X, T, p, S)
        t_mono = time.perf_counter() - t
        t = time.perf_counter()
        base = problem.flow(X, T, p, S)
        h = 1e-7
        M_fd = np.empty((D, D))
        for j in range(D):
            e = X.copy()
            e[j] += h
            M_fd[:, j] = (problem.flow(e, T, p, S) - base) / h
        t_fd = time.perf_counter() - t
        t = time.perf_counter()
        mu = np.linalg.eigvals(M)
        t_eig = time.perf_counter() - t
        t = time.perf_counter()
        mu_a = cycles.floquet_multipliers(problem, X, T, p, S, method="krylov", k=10)
        t_arnoldi = time.perf_counter() - t
        top = mu[np.argsort(-np.abs(mu))][:10]
        lin = cycles._linearise(problem, np.concatenate([X, [T, p]]), S, False)
        phase = problem.field(X, p)
        phase /= np.linalg.norm(phase)
        last = np.zeros(D + 2)
        last[-1] = 1.0
        opk = cycles._krylov_operator(problem, lin, phase, last)
        rhs = np.concatenate([problem.flow(X, T, p + 1e-3, S) - X, [0.0, 0.0]])
        its = []
        t = time.perf_counter()
        sla.gmres(opk, rhs, rtol=1e-10, atol=0.0, restart=D + 2, maxiter=2,
                  callback=lambda r: its.append(r), callback_type="pr_norm")
        t_gmres = time.perf_counter() - t
    print(f"  at the first orbit ({S} RK4 steps): one period {t_period * 1000:.1f} ms; one Jacobian-vector "
          f"product {t_jvp * 1000:.1f} ms; monodromy by tangent blocks {t_mono:.2f} s vs forward differences "
          f"{t_fd:.2f} s (max difference {np.max(np.abs(M_fd - M)):.2g}); eigvals {t_eig:.2f} s; Arnoldi, 10 "
          f"largest {t_arnoldi:.2f} s (max |mu| difference "
          f"{np.max(np.abs(np.sort(np.abs(mu_a)) - np.sort(np.abs(top)))):.2g}); "
          f"one Newton-Krylov step: GMRES {len(its)} iterations, {t_gmres:.1f} s")


if __name__ == "__main__":
    main()
