"""Benchmark: compiled network integrators vs plain numpy/scipy (ratios printed, never asserted).

    python benchmarks/bench_network.py [--t-max 1000] [--numpy-t 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def connectome_or_random(n=90, seed=0):
    try:
        from bifnet.connectome import load_connectome

        c = load_connectome("tvb96")
        return c, f"tvb96 (N={c.n_regions})"
    except Exception:
        rng = np.random.default_rng(seed)
        A = rng.random((n, n))
        return A + A.T, f"random symmetric (N={n}, seed={seed})"


def numpy_rhs_factory(net):
    from bifnet.codegen import rhs_function
    from bifnet.systems import node_system

    m = net.model
    f = rhs_function(node_system(m))
    p = np.array([net.parameters[k] for k in m.parameter_names])
    W = np.asarray(net.weights)
    eps = net.parameters[m.coupling.strength]
    N, n = net.state_shape
    ci = m.coupled_index

    def rhs(t, y):
        Y = y.reshape(N, n)
        C = eps * (W @ Y[:, ci])
        out = f(list(Y.T), p, [C])
        return np.asarray(out).T.reshape(-1)

    return rhs


def numpy_rk4(rhs, y, dt, nsteps):
    for _ in range(nsteps):
        k1 = rhs(0, y)
        k2 = rhs(0, y + 0.5 * dt * k1)
        k3 = rhs(0, y + 0.5 * dt * k2)
        k4 = rhs(0, y + dt * k3)
        y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def main():
    from scipy.integrate import solve_ivp

    from bifnet.model import load_model
    from bifnet.network import build_network, homogeneous_initial_state, simulate

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--t-max", type=float, default=1000.0)
    parser.add_argument("--numpy-t", type=float, default=100.0, help="numpy RK4 measured on this span, then scaled")
    args = parser.parse_args()

    model = load_model("ngnmm_ping")
    W, name = connectome_or_random()
    params = {"eps": 8.0, "Iext_e": 5.0}
    net = build_network(model, W, params)
    y0 = homogeneous_initial_state(net, model.default_state(), "random", 1e-3, rng=0)
    print(f"network: {name}, {net.dimension} state variables, {args.t_max:g} ms, params {params}")

    # warm-up (compilation excluded from timings)
    simulate(net, (0, 1), y0, "rk4")
    simulate(net, (0, 1), y0, "dopri5")

    t0 = time.perf_counter()
    a = simulate(net, (0, args.t_max), y0, "dopri5", rtol=1e-6, atol=1e-9, stride=1000)
    t_dopri = time.perf_counter() - t0
    rhs = numpy_rhs_factory(net)
    t0 = time.perf_counter()
    b = solve_ivp(rhs, (0, args.t_max), y0.ravel(), method="RK45", rtol=1e-6, atol=1e-9,
                  t_eval=a.t)
    t_scipy = time.perf_counter() - t0
    diff = np.abs(b.y.T - a.y.reshape(a.t.size, -1)).max()
    print(f"adaptive  : bifnet dopri5 {t_dopri:.3f} s ({a.stats['n_steps']} steps) | scipy RK45 numpy "
          f"{t_scipy:.3f} s ({b.nfev} nfev) | speed-up x{t_scipy / t_dopri:.1f} | max diff {diff:.2e}")

    t0 = time.perf_counter()
    c = simulate(net, (0, args.t_max), y0, "rk4", dt=0.01, stride=1000)
    t_rk4 = time.perf_counter() - t0
    n_np = int(round(args.numpy_t / 0.01))
    t0 = time.perf_counter()
    y_np = numpy_rk4(rhs, y0.ravel().copy(), 0.01, n_np)
    t_np = (time.perf_counter() - t0) * (args.t_max / args.numpy_t)
    check = simulate(net, (0, args.numpy_t), y0, "rk4", dt=0.01, stride=n_np)
    diff = np.abs(check.y[-1].ravel() - y_np).max()
    print(f"fixed step: bifnet rk4 (numba) {t_rk4:.3f} s | numpy rk4 {t_np:.3f} s (scaled from "
          f"{args.numpy_t:g} ms) | speed-up x{t_np / t_rk4:.1f} | max diff {diff:.2e} | success {c.success}")


if __name__ == "__main__":
    main()
