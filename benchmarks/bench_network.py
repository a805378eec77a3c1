"""Benchmark: compiled network integrators vs plain numpy/scipy and jitcode (ratios printed, never asserted).

    python benchmarks/bench_network.py [--t-max 1000] [--numpy-t 100] [--repeats 3]

The kernels are compiled into a fresh, empty kernel cache (a temporary
BIFNET_CACHE_DIR), so "end to end" is the first run on a machine; a second
process then measures a later run, which loads them from that cache.
Every timing is the best of ``--repeats`` (the machine may be shared), and
every baseline (scipy's RK45 on a numpy right-hand side, numpy RK4,
jitcode's integration when jitcode is installed) is measured in the same
run. The right-hand side is profiled against its bound: its FLOPs and
bytes, over this core's dgemm rate and its read bandwidth for an array the
size of ``W``, both measured here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def jitcode_end_to_end(net, y0, t_max, reference, repeats=1):
    """The same network in jitcode (if installed): ``(compile + integrate, integrate)`` in s (dopri5,
    rtol 1e-6; the integration the best of ``repeats``)."""
    try:
        import symengine
        from jitcode import jitcode, y as Y
    except ImportError:
        print("jitcode    : not installed (pip install -e '.[bench]') - comparison skipped")
        return None
    import sympy

    from bifnet.systems import node_system

    model = net.model
    system = node_system(model)
    N, n = net.state_shape
    W = np.asarray(net.weights)
    values = {s: net.parameters[str(s)] for s in system.parameters}
    ci = model.coupled_index
    eps = net.parameters[model.coupling.strength]
    rhs = []
    for i in range(N):
        C = eps * sum(float(W[i, j]) * Y(j * n + ci) for j in range(N) if W[i, j] != 0)
        for expr in system.rhs:
            e = expr.subs(system.inputs[0], sympy.Symbol("C__")).subs(values).subs(sympy.pi, float(np.pi))
            e = symengine.sympify(str(e))
            mapping = {symengine.Symbol(str(s)): Y(i * n + k) for k, s in enumerate(system.state)}
            mapping[symengine.Symbol("C__")] = C
            rhs.append(e.subs(mapping))
    t0 = time.perf_counter()
    ode = jitcode(rhs, verbose=False)
    ode.set_integrator("dopri5", rtol=1e-6, atol=1e-9)
    ode.set_initial_value(np.asarray(y0).ravel(), 0.0)
    t_compile = time.perf_counter() - t0
    t_run = None
    for _ in range(repeats):
        ode.set_initial_value(np.asarray(y0).ravel(), 0.0)
        t0 = time.perf_counter()
        final = ode.integrate(t_max)
        t_run = min(t_run or np.inf, time.perf_counter() - t0)
    diff = np.abs(final - reference.y[-1].ravel()).max()
    print(f"jitcode   : compilation {t_compile:.2f} s + integration {t_run:.3f} s = {t_compile + t_run:.2f} s "
          f"(max diff at t_max vs bifnet {diff:.1e})")
    return t_compile + t_run, t_run


_LATER_RUN = """
import time
t0 = time.perf_counter()
from bifnet.connectome import load_connectome
from bifnet.model import load_model
from bifnet.network import build_network, homogeneous_initial_state, simulate
model = load_model("ngnmm_ping")
net = build_network(model, {weights}, {params!r})
y0 = homogeneous_initial_state(net, model.default_state(), "random", 1e-3, rng=0)
t1 = time.perf_counter()
simulate(net, (0, {t_max!r}), y0, "dopri5", rtol=1e-6, atol=1e-9, stride=1000)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def later_run(weights_expr, params, t_max):
    """A new process with the kernels in the disk cache: (total wall s, imports+set-up s, simulate s)."""
    code = _LATER_RUN.format(weights=weights_expr, params=params, t_max=t_max)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ.copy()).stdout.split()
    return time.perf_counter() - t0, float(out[0]), float(out[1])


def best_of(repeats, function):
    """``(result, best wall time in s)`` of ``repeats`` calls."""
    best, result = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - t0)
    return result, best


def rhs_profile(net, y0, repeats):
    """Time the compiled right-hand side (and its coupling product alone) and state its bound."""
    import numba
    import sympy

    from bifnet._blas import single_threaded_blas
    from bifnet.network._kernels import network_module

    module = network_module(net.model)
    rhs, coupling_input = module.rhs, module.coupling_input
    y = np.ascontiguousarray(y0, dtype=float).ravel()
    args = net.kernel_args
    p, W = args
    N, n = net.state_shape
    m = len(net.model.channels)

    @numba.njit
    def rhs_loop(y, args, out, count):
        for _ in range(count):
            rhs(y, args, out)
        return out[0]

    @numba.njit
    def coupling_loop(y, W, p, count):
        C = np.empty((W.shape[0], m))
        yc = np.empty(W.shape[0])
        for _ in range(count):
            coupling_input(y, W, p, C, yc)
        return C[0, 0]

    @numba.njit(fastmath={"reassoc", "contract"})
    def read_loop(A, count):  # streams an array the size of W, as the coupling product does
        acc = 0.0
        flat = A.ravel()
        for _ in range(count):
            for j in range(flat.size):
                acc += flat[j]
        return acc

    out = np.empty_like(y)
    count = 20000
    rhs_loop(y, args, out, 10)
    coupling_loop(y, W, p, 10)
    read_loop(W, 10)
    t_rhs = best_of(repeats, lambda: rhs_loop(y, args, out, count))[1] / count
    t_coupling = best_of(repeats, lambda: coupling_loop(y, W, p, count))[1] / count
    t_read = best_of(repeats, lambda: read_loop(W, count))[1] / count
    G = 512
    A = np.random.default_rng(0).standard_normal((G, G))
    with single_threaded_blas():
        A @ A
        t_gemm = best_of(repeats, lambda: A @ A)[1]
    flop_rate = 2.0 * G ** 3 / t_gemm
    bandwidth = W.nbytes / t_read
    node_flops = sum(sympy.count_ops(sympy.sympify(e)) for e in net.model.equations) * N  # each operation counted once
    flops = 2.0 * N * N * m + node_flops
    nbytes = W.nbytes + 3 * y.nbytes  # W, y (read), the output (written) and the stage input
    t_bound = max(flops / flop_rate, nbytes / bandwidth)
    print(f"rhs       : {t_rhs * 1e6:.2f} us per evaluation ({N * n} variables): coupling product "
          f"{t_coupling * 1e6:.2f} us ({m} x {N}x{N} matrix-vector), node equations {(t_rhs - t_coupling) * 1e6:.2f} us")
    print(f"            bound: {flops / 1e3:.1f} kFLOP at this core's dgemm rate {flop_rate / 1e9:.1f} GFLOP/s = "
          f"{flops / flop_rate * 1e6:.2f} us; {nbytes / 1e3:.1f} kB (W is {W.nbytes / 1e3:.1f} kB) at its read "
          f"bandwidth for a W-sized array {bandwidth / 1e9:.1f} GB/s = {nbytes / bandwidth * 1e6:.2f} us; "
          f"the right-hand side is {'memory' if nbytes / bandwidth > flops / flop_rate else 'FLOP'}-bound and "
          f"runs at {t_rhs / t_bound:.1f}x its bound ({t_bound * 1e6:.2f} us)")
    return t_rhs


def main():
    from scipy.integrate import solve_ivp

    from bifnet.model import load_model
    from bifnet.network import build_network, homogeneous_initial_state, simulate

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--t-max", type=float, default=1000.0)
    parser.add_argument("--numpy-t", type=float, default=100.0, help="numpy RK4 measured on this span, then scaled")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every timing (the best is printed)")
    args = parser.parse_args()
    repeats = args.repeats
    cache = tempfile.TemporaryDirectory(prefix="bifnet-bench-cache-")
    os.environ["BIFNET_CACHE_DIR"] = cache.name  # an empty kernel cache: the first run on a machine

    model = load_model("ngnmm_ping")
    W, name = connectome_or_random()
    params = {"eps": 8.0, "Iext_e": 5.0}
    net = build_network(model, W, params)
    y0 = homogeneous_initial_state(net, model.default_state(), "random", 1e-3, rng=0)
    print(f"network: {name}, {net.dimension} state variables, {args.t_max:g} ms, params {params}")

    # first calls: numba compilation of the generated kernels (what "end to end" adds)
    t0 = time.perf_counter()
    simulate(net, (0, 1), y0, "dopri5")
    t_compile = time.perf_counter() - t0
    simulate(net, (0, 1), y0, "rk4")

    print(f"timings   : best of {repeats} repeats each (wall time; the machine may be shared)")
    t_rhs = rhs_profile(net, y0, repeats)
    a, t_dopri = best_of(repeats, lambda: simulate(net, (0, args.t_max), y0, "dopri5", rtol=1e-6, atol=1e-9,
                                                   stride=1000))
    rhs = numpy_rhs_factory(net)
    b, t_scipy = best_of(repeats, lambda: solve_ivp(rhs, (0, args.t_max), y0.ravel(), method="RK45", rtol=1e-6,
                                                    atol=1e-9, t_eval=a.t))
    diff = np.abs(b.y.T - a.y.reshape(a.t.size, -1)).max()
    print(f"adaptive  : bifnet dopri5 {t_dopri:.3f} s ({a.stats['n_steps']} steps, {a.nfev} nfev: "
          f"{t_dopri / a.nfev * 1e6:.2f} us per nfev, right-hand side {t_rhs * 1e6:.2f}) | scipy RK45 numpy "
          f"{t_scipy:.3f} s ({b.nfev} nfev) | speed-up x{t_scipy / t_dopri:.1f} | max diff {diff:.2e}")

    print(f"end to end: bifnet dopri5 compilation {t_compile:.2f} s + integration {t_dopri:.3f} s = "
          f"{t_compile + t_dopri:.2f} s (first run: empty kernel cache)")
    weights_expr = 'load_connectome("tvb96")' if name.startswith("tvb96") else repr(W.tolist())
    wall, setup, run = later_run(weights_expr, params, args.t_max)
    print(f"            later run, new process: simulate {run:.2f} s (kernels from the disk cache), "
          f"{wall:.2f} s for the whole process with Python start-up and imports ({setup:.2f} s)")
    jit = jitcode_end_to_end(net, y0, args.t_max, a, repeats)
    if jit:
        t_jit, t_jit_run = jit
        print(f"            speed-up vs jitcode: x{t_jit / (t_compile + t_dopri):.1f} first run, "
              f"x{t_jit / run:.1f} later runs; integration alone x{t_jit_run / t_dopri:.2f}")

    c, t_rk4 = best_of(repeats, lambda: simulate(net, (0, args.t_max), y0, "rk4", dt=0.01, stride=1000))
    n_np = int(round(args.numpy_t / 0.01))
    y_np, t_np = best_of(repeats, lambda: numpy_rk4(rhs, y0.ravel().copy(), 0.01, n_np))
    t_np *= args.t_max / args.numpy_t
    check = simulate(net, (0, args.numpy_t), y0, "rk4", dt=0.01, stride=n_np)
    diff = np.abs(check.y[-1].ravel() - y_np).max()
    print(f"fixed step: bifnet rk4 (numba) {t_rk4:.3f} s ({t_rk4 / c.nfev * 1e6:.2f} us per nfev) | numpy rk4 "
          f"{t_np:.3f} s (scaled from "
          f"{args.numpy_t:g} ms) | speed-up x{t_np / t_rk4:.1f} | max diff {diff:.2e} | success {c.success}")


if __name__ == "__main__":
    main()
