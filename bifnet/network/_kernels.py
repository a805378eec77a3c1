"""Numba kernels of the network: right-hand side, tangent dynamics, integrators.

A model's kernels are one generated module (:func:`network_module`): the
template ``_kernel_template.py`` with the model's node kernels and constants
filled in, written to the kernel cache and compiled by numba with
``cache=True``, so a model is compiled once per machine, not once per run.
``import bifnet.network`` stays cheap (nothing is generated until used).

Kernel conventions
------------------
* ``rhs(y, args, out)`` writes ``dy/dt`` into ``out``; ``args`` is ``(p, W)``.
* ``tangent(y, V, args, dy, dV)`` writes ``dy/dt`` and ``D f(y) V`` (``V``
  is ``D x k``) into ``dy`` and ``dV``.
* The integrators of the module (``rk4_steps``, ``dopri5``, returning the
  module's ``STATUS_*`` codes) call the model's ``rhs`` directly;
  :func:`integrators` holds the one generic loop
  (over any tangent field passed as an argument, not cached).
* The Lyapunov stepper (:func:`lyapunov_kernels`) calls scipy's BLAS
  through a process-specific address, so it is compiled per process; the
  functions it calls come from the cached module.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

# Dormand–Prince 5(4) tableau and Shampine's quartic dense output
# (the same coefficients as scipy.integrate.RK45).
DP_C = np.array([0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0])
DP_A = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0],
    [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0, 0.0],
    [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0],
])
DP_B = np.array([35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0])
DP_E = np.array([-71.0 / 57600.0, 0.0, 71.0 / 16695.0, -71.0 / 1920.0, 17253.0 / 339200.0,
                 -22.0 / 525.0, 1.0 / 40.0])
DP_P = np.array([
    [1.0, -8048581381.0 / 2820520608.0, 8663915743.0 / 2820520608.0, -12715105075.0 / 11282082432.0],
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 131558114200.0 / 32700410799.0, -68118460800.0 / 10900136933.0,
     87487479700.0 / 32700410799.0],
    [0.0, -1754552775.0 / 470086768.0, 14199869525.0 / 1410260304.0, -10690763975.0 / 1880347072.0],
    [0.0, 127303824393.0 / 49829197408.0, -318862633887.0 / 49829197408.0,
     701980252875.0 / 199316789632.0],
    [0.0, -282668133.0 / 205662961.0, 2019193451.0 / 616988883.0, -1453857185.0 / 822651844.0],
    [0.0, 40617522.0 / 29380423.0, -110615467.0 / 29380423.0, 69997945.0 / 29380423.0],
])

_TEMPLATE = Path(__file__).with_name("_kernel_template.py")
_BEGIN = "# ---- BEGIN GENERATED ----\n"
_END = "# ---- END GENERATED ----\n"


def network_module_source(model) -> str:
    """Source of ``model``'s kernel module: the template with the model filled in."""
    from bifnet.codegen import node_kernel_source

    template = _TEMPLATE.read_text()
    head, rest = template.split(_BEGIN)
    _, body = rest.split(_END)
    model.require_coupling("a network")
    constants = {"N_VAR": model.n_variables, "N_CH": len(model.channels),
                 "CI": "(" + "".join(f"{i}, " for i in model.coupled_indices) + ")"}
    for name, value in constants.items():
        head, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", head, count=1, flags=re.M)
        if count != 1:  # pragma: no cover - a broken template
            raise RuntimeError(f"kernel template: no line '{name} = ...'")
    node = "@jit\n" + node_kernel_source(model).replace("\ndef ", "\n@jit\ndef ")
    stages = _node_tangent_source(model).replace("def tangent_", "@jit_contract\ndef tangent_")
    return f"{head}# model {model.name!r}\n\n{node}\n\n{stages}\n{body}"


@functools.lru_cache(maxsize=None)
def network_module(model):
    """The compiled kernel module of ``model`` (generated once, cached on disk by numba)."""
    from bifnet.codegen import kernel_module

    return kernel_module(network_module_source(model), re.sub(r"\W", "_", model.name))


def network_kernels(model):
    """``(rhs, tangent, node_jacobians)`` of ``model``'s network.

    ``rhs(y, args, out)`` and ``tangent(y, V, args, dy, dV)`` with
    ``args = (p, W)``, ``y`` the flat state (``N * n``, node-major) and ``W``
    the scheme's coupling matrix (:attr:`bifnet.network.Network.weights`);
    ``node_jacobians(y, p, W, Js, gs)`` writes each node's ``D_x f`` (``Js``,
    N x n x n) and ``df/dC_k`` (``gs``, N x n x m).
    """
    m = network_module(model)
    return m.rhs, m.tangent, m.node_jacobians


@functools.lru_cache(maxsize=None)
def integrators():
    """The generic tangent loop over a field passed as an argument (compiled once per process)."""
    import numba

    @numba.njit(nogil=True)
    def first_nonfinite(y):
        for i in range(y.shape[0]):
            if not np.isfinite(y[i]):
                return i
        return -1

    @numba.njit(nogil=True)
    def rk4_tangent_steps(g, args, y, V, dt, nsteps):
        """Advance ``(y, V)`` in place by ``nsteps`` RK4 steps of the joint
        (state, tangent) system. Returns ``False`` if it became non-finite."""
        D = y.shape[0]
        k = V.shape[1]
        ky = np.empty((4, D))
        kV = np.empty((4, D, k))
        ty = np.empty(D)
        tV = np.empty((D, k))
        for s in range(nsteps):
            g(y, V, args, ky[0], kV[0])
            for i in range(D):
                ty[i] = y[i] + 0.5 * dt * ky[0, i]
                for m in range(k):
                    tV[i, m] = V[i, m] + 0.5 * dt * kV[0, i, m]
            g(ty, tV, args, ky[1], kV[1])
            for i in range(D):
                ty[i] = y[i] + 0.5 * dt * ky[1, i]
                for m in range(k):
                    tV[i, m] = V[i, m] + 0.5 * dt * kV[1, i, m]
            g(ty, tV, args, ky[2], kV[2])
            for i in range(D):
                ty[i] = y[i] + dt * ky[2, i]
                for m in range(k):
                    tV[i, m] = V[i, m] + dt * kV[2, i, m]
            g(ty, tV, args, ky[3], kV[3])
            c = dt / 6.0
            for i in range(D):
                y[i] += c * (ky[0, i] + 2.0 * ky[1, i] + 2.0 * ky[2, i] + ky[3, i])
                for m in range(k):
                    V[i, m] += c * (kV[0, i, m] + 2.0 * kV[1, i, m] + 2.0 * kV[2, i, m] + kV[3, i, m])
            if first_nonfinite(y) >= 0:
                return False
        return True

    return {"rk4_tangent_steps": rk4_tangent_steps, "first_nonfinite": first_nonfinite}


# --------------------------------------------------------------------------- #
# Fused RK4 stepper of the state and a block of tangent vectors (Lyapunov)
# --------------------------------------------------------------------------- #


#: dtype of the tangent vectors for each ``precision`` of the Lyapunov stepper
TANGENT_DTYPES = {"double": np.float64, "single": np.float32}


@functools.lru_cache(maxsize=None)
def _blas_gemm(name: str):
    """scipy's Fortran ``dgemm`` or ``sgemm`` as a ctypes function callable from numba."""
    import ctypes

    from numba.extending import get_cython_function_address

    addr = get_cython_function_address("scipy.linalg.cython_blas", name)
    return ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))(addr)


def _node_tangent_source(model) -> str:
    """Source of the three tangent updates of the fused RK4 stage (all nodes).

    With ``K_i = J_i X_i + sum_k s_k (df/dC_k)_i (W X_{c_k})_i`` (``X`` the
    stage input, ``n x kb`` rows of node ``i``; ``J_i = Js[i]``,
    ``(df/dC_k)_i = gs[i, :, k]``, ``(W X_{c_k}) = WT[k]``) the updates are:

    * ``first``:  ``X = V``;  ``T = V + a K``;  ``A = V + b K``
    * ``middle``: ``X = T``;  ``U = V + a K``;  ``A += b K``
    * ``last``:   ``X = T``;  ``V = A + b K``

    (``T`` and ``U`` alternate as the stage buffers.) The Jacobian's
    structural zeros (from the symbolic model) are skipped and the ``n x n``
    block is unrolled into one loop per row of ``K`` that also writes the
    outputs' row (no input is overwritten, so ``K`` is never stored); each loop
    touches few arrays so that LLVM vectorises it (with more, its runtime
    alias checks exceed their limit and the loop stays scalar). The loop over
    the nodes is inside the function and the arrays are indexed directly (no
    per-node calls or row views: their fixed cost was a third of the stage at
    ``kb`` about 48).
    """
    import sympy

    n = model.n_variables
    f = sympy.Matrix(model.equations)
    jac = f.jacobian(sympy.Matrix(model.state_symbols))
    inputs = model.input_symbols
    terms = [[b for b in range(n) if jac[a, b] != 0] for a in range(n)]
    coupled = [[k for k, C in enumerate(inputs) if f[a].diff(C) != 0] for a in range(n)]
    lines = []
    for kind in ("first", "middle", "last"):
        src = "V" if kind == "first" else "T"
        lines.append(f"def tangent_{kind}(Js, gs, sv, V, T, A, U, WT, a, b):")
        lines.append("    kb = V.shape[1]")
        for k in range(len(inputs)):
            lines.append(f"    s{k} = sv[{k}]")
        lines.append("    for i in range(WT.shape[1]):")
        lines.append(f"        base = i * {n}")
        for r in range(n):
            for c in terms[r]:
                lines.append(f"        j{r}_{c} = Js[i, {r}, {c}]")
            for k in coupled[r]:
                lines.append(f"        g{r}_{k} = s{k} * gs[i, {r}, {k}]")
        for r in range(n):
            parts = [f"j{r}_{c} * {src}[base + {c}, m]" for c in terms[r]]
            parts += [f"g{r}_{k} * WT[{k}, i, m]" for k in coupled[r]]
            k_row = " + ".join(parts) if parts else "0.0"
            lines.append("        for m in range(kb):")
            if kind == "first":  # the input V is not written: update T and A row by row
                lines.append(f"            k = {k_row}")
                lines.append(f"            T[base + {r}, m] = V[base + {r}, m] + a * k")
                lines.append(f"            A[base + {r}, m] = V[base + {r}, m] + b * k")
            elif kind == "last":  # nor is T
                lines.append(f"            V[base + {r}, m] = A[base + {r}, m] + b * ({k_row})")
            else:  # input T, output (the next stage's input) the other buffer U
                lines.append(f"            k = {k_row}")
                lines.append(f"            U[base + {r}, m] = V[base + {r}, m] + a * k")
                lines.append(f"            A[base + {r}, m] += b * k")
        lines.append("    return None")
        lines.append("")
    return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def lyapunov_kernels(model, precision: str = "double"):
    """Compile the fused RK4 stepper of the network state and a tangent block.

    Returns ``rk4_block(y, V, p, W, Wg, dt, nsteps, *work) -> bool``: advance
    the flat state ``y`` and the C-contiguous ``D x kb`` tangent block ``V``
    in place by ``nsteps`` classical RK4 steps of ``y' = f(y)``,
    ``V' = Df(y) V`` (the same scheme as ``rk4_tangent_steps`` with the
    network's ``tangent`` field); ``False`` if the state became non-finite.
    ``work`` comes from :func:`lyapunov_workspace`; ``Wg`` is ``W`` in the
    tangent dtype.

    Per stage the coupling ``W @ X_c`` of the ``kb`` vectors is one BLAS
    ``gemm`` (the strided coupled rows are passed with their leading
    dimension, no copy) and the node blocks are an unrolled loop generated
    from the symbolic Jacobian's sparsity (:func:`_node_tangent_source`);
    the RK4 combinations are fused into that loop. ``nogil``: independent
    blocks of tangent vectors can run on separate threads.

    ``precision``: ``"double"``, or ``"single"`` for float32 tangent vectors,
    node Jacobians and ``sgemm`` (the state stays float64). The tangent
    loops are bound by memory traffic, so single precision halves them.
    """
    import numba

    if precision not in TANGENT_DTYPES:
        raise ValueError(f"precision: expected one of {sorted(TANGENT_DTYPES)}, got {precision!r}")
    m = network_module(model)
    node_fields = m.node_fields
    tangent_first, tangent_middle, tangent_last = m.tangent_first, m.tangent_middle, m.tangent_last
    strengths = m.strengths
    n = model.n_variables
    cis = np.array(model.coupled_indices, dtype=np.int64)
    n_ch = cis.size
    gemm = _blas_gemm("dgemm" if precision == "double" else "sgemm")

    @numba.njit(nogil=True)
    def coupling_product(W, X, WT, ints, flts, chars):
        # per channel k: WT[k] = W @ X[c_k::n] (row-major) as column-major WT[k]^T = X_c^T W^T
        for k in range(n_ch):
            Xc = X[cis[k]:]
            Wk = WT[k]
            gemm(chars.ctypes, chars.ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[1:].ctypes, flts[0:].ctypes,
                 Xc.ctypes, ints[2:].ctypes, W.ctypes, ints[1:].ctypes, flts[1:].ctypes, Wk.ctypes,
                 ints[0:].ctypes)

    @numba.njit(nogil=True)
    def rk4_block(y, V, p, W, Wg, dt, nsteps, T, A, K, WT, ys, ya, C, yc, J, g, f, ints, flts, chars, s64, sv):
        N = W.shape[0]
        kb = V.shape[1]
        ints[0] = kb
        ints[1] = N
        ints[2] = n * kb
        # flts (tangent dtype): gemm's alpha and beta, then the scalars of the tangent loops, so that
        # those loops do all their arithmetic in the tangent dtype
        flts[0] = 1.0
        flts[1] = 0.0
        h = 0.5 * dt
        w1 = dt / 6.0
        w2 = dt / 3.0
        flts[2] = 0.0
        strengths(p, s64)
        for k in range(n_ch):
            sv[k] = s64[k]
        flts[3] = h
        flts[4] = w1
        flts[5] = w2
        flts[6] = dt
        flts[7] = 0.0
        eps_t = sv
        D = y.shape[0]
        for s in range(nsteps):
            # stage 1 at (y, V)
            node_fields(y, p, W, C, yc, f, J, g)
            coupling_product(Wg, V, WT, ints, flts, chars)
            for d in range(D):
                ys[d] = y[d] + h * f[d]
                ya[d] = y[d] + w1 * f[d]
            tangent_first(J, g, eps_t, V, T, A, K, WT, flts[3], flts[4])
            # stages 2 and 3 at (ys, T)
            for stage in range(2):
                c = h if stage == 0 else dt
                node_fields(ys, p, W, C, yc, f, J, g)
                X = T if stage == 0 else K
                coupling_product(Wg, X, WT, ints, flts, chars)
                for d in range(D):
                    ys[d] = y[d] + c * f[d]
                    ya[d] += w2 * f[d]
                # stage 2: T -> K, stage 3: K -> T
                tangent_middle(J, g, eps_t, V, X, A, T if stage == 1 else K, WT, flts[3 + 3 * stage], flts[5])
            # stage 4 at (ys, T); V <- A + dt/6 K4, y <- ya + dt/6 f
            node_fields(ys, p, W, C, yc, f, J, g)
            coupling_product(Wg, T, WT, ints, flts, chars)
            bad = False
            for d in range(D):
                y[d] = ya[d] + w1 * f[d]
                if not np.isfinite(y[d]):
                    bad = True
            tangent_last(J, g, eps_t, V, T, A, K, WT, flts[7], flts[4])
            if bad:
                return False
        return True

    return rk4_block


def lyapunov_workspace(N: int, n: int, kb: int, precision: str = "double", m: int = 1):
    """Scratch arrays of :func:`lyapunov_kernels`' ``rk4_block`` (one set per thread; ``m`` channels)."""
    D = N * n
    dt = TANGENT_DTYPES[precision]
    return (np.empty((D, kb), dt), np.empty((D, kb), dt), np.empty((D, kb), dt), np.empty((m, N, kb), dt),
            np.empty(D), np.empty(D), np.empty((N, m)), np.empty(N),
            np.empty((N, n, n), dt), np.empty((N, n, m), dt), np.empty(D), np.empty(3, np.int32), np.empty(8, dt),
            np.array([ord("N")], np.int8), np.empty(m), np.empty(m, dt))


@functools.lru_cache(maxsize=None)
def _openblas_thread_controls():
    """``[(get, set), ...]`` of every loaded OpenBLAS (numpy's and scipy's wheels bundle one each)."""
    import ctypes

    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS)

    controls = []
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:  # not Linux: leave the BLAS alone
        return controls
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in (("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                                   ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                                   ("openblas_get_num_threads", "openblas_set_num_threads"),
                                   ("openblas_get_num_threads64_", "openblas_set_num_threads64_")):
            get = getattr(lib, get_name, None)
            set_ = getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype = ctypes.c_int
                set_.argtypes = [ctypes.c_int]
                controls.append((get, set_))
                break
    return controls


class single_threaded_blas:
    """Context manager: every loaded OpenBLAS on one thread (restored on exit).

    The Lyapunov stepper calls ``dgemm`` on ``N x N x k`` products (``N``
    about 100) from its own threads, and the QR steps work on ``Nn x k``
    matrices; OpenBLAS's internal threading at these sizes costs far more
    than it gains (its idle workers spin and take the cores from the
    stepper's threads). A no-op for other BLAS libraries.
    """

    def __enter__(self):
        self._saved = []
        for get, set_ in _openblas_thread_controls():
            self._saved.append((set_, int(get())))
            set_(1)
        return self

    def __exit__(self, *exc):
        for set_, value in self._saved:
            set_(value)
        return False
