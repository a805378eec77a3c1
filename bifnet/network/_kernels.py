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
    nodes = "@jit\n" + _nodes_rhs_source(model)
    return f"{head}# model {model.name!r}\n\n{node}\n\n{stages}\n\n{nodes}\n{body}"


def _nodes_rhs_source(model) -> str:
    """Source of ``nodes_rhs(y, p, C, out)``: the node equations of every node, in one loop.

    What depends on the parameters only (``1/tau``, ``pi^2 tau^2``, ...) is
    computed once before the loop: each equation is expanded and every term
    split into its parameter factor and the rest (an equation whose
    expansion grows more than twice its size is kept as written). In the
    loop the state is indexed directly (no per-node views or calls) and the
    per-node subexpressions are shared (``sympy.cse``).
    """
    import sympy

    from bifnet.codegen import _expr_code

    n = model.n_variables
    xs = {s: sympy.Symbol(f"y[b + {k}]") for k, s in enumerate(model.state_symbols)}
    ps = {s: sympy.Symbol(f"p[{k}]") for k, s in enumerate(model.parameter_symbols)}
    cs = {s: sympy.Symbol(f"C[i, {k}]") for k, s in enumerate(model.input_symbols)}
    varying = set(xs.values()) | set(cs.values())
    coefficients = {}  # parameter-only factor -> its symbol

    def hoist(expr):
        expanded = sympy.expand(expr)
        if sympy.count_ops(expanded) > 2 * sympy.count_ops(expr):
            expanded = expr
        terms = []
        for term in sympy.Add.make_args(expanded):
            factor, rest = term.as_independent(*varying, as_Add=False)
            if factor.free_symbols and rest != 1:
                symbol = coefficients.setdefault(factor, sympy.Symbol(f"_c{len(coefficients)}"))
                terms.append(symbol * rest)
            elif factor.free_symbols:  # a parameter-only term
                terms.append(coefficients.setdefault(factor, sympy.Symbol(f"_c{len(coefficients)}")))
            else:
                terms.append(term)
        return sympy.Add(*terms)

    exprs = [hoist(sympy.sympify(e).xreplace({**xs, **ps, **cs})) for e in model.equations]
    reps, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols("_t"))
    lines = ["def nodes_rhs(y, p, C, out):"]
    for factor, symbol in coefficients.items():
        lines.append(f"    {symbol} = {_expr_code(factor, {})}")
    lines.append("    for i in range(C.shape[0]):")
    lines.append(f"        b = i * {n}")
    for symbol, e in reps:
        lines.append(f"        {symbol} = {_expr_code(e, {})}")
    for k, e in enumerate(reduced):
        lines.append(f"        out[b + {k}] = {_expr_code(e, {})}")
    lines.append("    return None")
    return "\n".join(lines) + "\n"


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
    import math

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

    ulp = float(np.finfo(float).eps)

    @numba.njit(nogil=True)
    def dopri5_tangent_block(g, args, y, V, t0, t1, h, rtol, atol, tangent_error, max_steps, stats, A, B, E):
        """Advance ``(y, V)`` in place from ``t0`` to exactly ``t1`` by Dormand–Prince 5(4) steps of the
        joint system (error norm on the state, or on state and tangent with ``tangent_error``); the same
        step control as :func:`dopri5_lyapunov_kernels`. Returns ``(status, next step)``."""
        D = y.shape[0]
        k = V.shape[1]
        ky = np.empty((7, D))
        kV = np.empty((7, D, k))
        ty = np.empty(D)
        tV = np.empty((D, k))
        yn = np.empty(D)
        Vn = np.empty((D, k))
        e2 = np.zeros(k)
        v2 = np.zeros(k)
        w2 = np.zeros(k)
        g(y, V, args, ky[0], kV[0])
        stats[0] += 1
        t = t0
        while t < t1:
            if stats[1] + stats[2] >= max_steps:
                return 3, h
            min_step = 10.0 * ulp * max(abs(t), 1.0)
            if h < min_step:
                h = min_step
            rejected = False
            finite = True
            while True:
                if h < min_step:
                    return (2 if finite else 1), h
                q = (t1 - t) / h
                tn = t1 if q <= 1.0 else t + (t1 - t) / math.ceil(q)
                hh = tn - t
                for s in range(1, 7):
                    coef = A[s] if s < 6 else B
                    target_y = ty if s < 6 else yn
                    target_V = tV if s < 6 else Vn
                    for i in range(D):
                        acc = 0.0
                        for r in range(s):
                            acc += coef[r] * ky[r, i]
                        target_y[i] = y[i] + hh * acc
                        for m in range(k):
                            acc = 0.0
                            for r in range(s):
                                acc += coef[r] * kV[r, i, m]
                            target_V[i, m] = V[i, m] + hh * acc
                    g(target_y, target_V, args, ky[s], kV[s])
                stats[0] += 6
                finite = True
                sy = 0.0
                sv = 0.0
                for i in range(D):
                    acc = 0.0
                    for r in range(7):
                        acc += E[r] * ky[r, i]
                    e = hh * acc / (atol + rtol * max(abs(y[i]), abs(yn[i])))
                    if not (math.isfinite(yn[i]) and math.isfinite(e)):
                        finite = False
                    sy += e * e
                    for m in range(k):
                        acc = 0.0
                        for r in range(7):
                            acc += E[r] * kV[r, i, m]
                        e2[m] += acc * acc
                        v2[m] += V[i, m] * V[i, m]
                        w2[m] += Vn[i, m] * Vn[i, m]
                en = math.sqrt(sy / D) if finite else math.inf
                # per column relative to the column's RMS (as dopri5_lyapunov_kernels)
                for m in range(k):
                    scale = atol + rtol * math.sqrt(max(v2[m], w2[m]) / D)
                    sv += e2[m] / D * (hh / scale) ** 2
                    e2[m] = 0.0
                    v2[m] = 0.0
                    w2[m] = 0.0
                ev = math.sqrt(sv / k)
                if not math.isfinite(ev):
                    ev = math.inf
                if tangent_error:
                    en = max(en, ev)
                if en < 1.0:
                    fac = 10.0 if en == 0.0 else min(10.0, 0.9 * en ** (-0.2))
                    if rejected:
                        fac = min(1.0, fac)
                    hnext = hh * fac
                    break
                fac = max(0.2, 0.9 * en ** (-0.2)) if math.isfinite(en) else 0.2
                h = hh * fac
                rejected = True
                stats[2] += 1
                if stats[1] + stats[2] >= max_steps:
                    return 3, h
            stats[5] += 1
            if ev > stats[3]:
                stats[3] = ev
            if ev > 1.0:
                stats[4] += 1
            for i in range(D):
                y[i] = yn[i]
                ky[0, i] = ky[6, i]
                for m in range(k):
                    V[i, m] = Vn[i, m]
                    kV[0, i, m] = kV[6, i, m]
            t = tn
            stats[1] += 1
            h = hnext
        return 0, h

    return {"rk4_tangent_steps": rk4_tangent_steps, "dopri5_tangent_block": dopri5_tangent_block,
            "first_nonfinite": first_nonfinite}


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
    # the plain product K = Df X (adaptive steppers combine the stages themselves)
    lines.append("def tangent_apply(Js, gs, sv, X, WT, K):")
    lines.append("    kb = X.shape[1]")
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
        parts = [f"j{r}_{c} * X[base + {c}, m]" for c in terms[r]]
        parts += [f"g{r}_{k} * WT[{k}, i, m]" for k in coupled[r]]
        k_row = " + ".join(parts) if parts else "0.0"
        lines.append("        for m in range(kb):")
        lines.append(f"            K[base + {r}, m] = {k_row}")
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


assert DP_E[1] == 0.0  # the error norms below skip the second stage

#: status of :func:`dopri5_lyapunov_kernels`' stepper when its step budget is spent
STATUS_BUDGET = 3


@functools.lru_cache(maxsize=None)
def dopri5_lyapunov_kernels(model, precision: str = "double"):
    """Compile the adaptive (Dormand–Prince 5(4)) stepper of the network state and a tangent block.

    Returns ``dopri5_block(y, V, p, W, Wg, t0, t1, h, rtol, atol, tangent_error, max_steps, stats, *work)
    -> (status, h)``: advance the flat state ``y`` and the C-contiguous
    ``D x kb`` tangent block ``V`` in place from ``t0`` to exactly ``t1``
    (the last steps are shortened to land there) on the steps of
    Dormand–Prince 5(4) with scipy's step control, starting with the trial
    step ``h``; returns the status (``STATUS_OK``, ``STATUS_NONFINITE``,
    ``STATUS_STEP_TOO_SMALL`` or :data:`STATUS_BUDGET`) and the next step.
    ``stats`` (float64, 6) accumulates ``nfev``, accepted and rejected
    steps, and records the largest error norm of the tangent block (per
    column relative to the column's RMS, then the RMS over columns) on an
    accepted step, the number of accepted steps where it exceeded 1 and the
    number of steps where it was evaluated;
    ``work`` comes from :func:`dopri5_lyapunov_workspace`.

    Error control: with ``tangent_error`` false the error norm (scipy's RMS
    norm with ``atol + rtol max(|y|, |y_new|)``) is the state's only; the
    step is then accepted or rejected from the six state stages alone and
    the tangent stages are computed once per accepted step, with the node
    Jacobians stored at the state stages (a rejected step costs six
    right-hand sides, no tangent work); the tangent block's own error
    estimate is recorded in ``stats`` on the first step of every interval,
    not used. With ``tangent_error`` true the
    tangent block is in the norm too (the larger of the state's and the
    block's RMS norms) and its stages are computed for every trial step
    the state accepts. Both use first same as last for the tangent block too
    (the seventh stage is the next step's first). The tangent stages are exactly
    the Dormand–Prince stages of the joint system ``y' = f(y)``,
    ``V' = Df(y) V``: per stage one BLAS ``gemm`` for ``W @ X_c`` and the
    unrolled node blocks (``tangent_apply`` of the model's module).
    """
    import math

    import numba

    if precision not in TANGENT_DTYPES:
        raise ValueError(f"precision: expected one of {sorted(TANGENT_DTYPES)}, got {precision!r}")
    mod = network_module(model)
    node_fields, tangent_apply, strengths = mod.node_fields, mod.tangent_apply, mod.strengths
    st_ok, st_nonfinite, st_small = mod.STATUS_OK, mod.STATUS_NONFINITE, mod.STATUS_STEP_TOO_SMALL
    st_budget = STATUS_BUDGET
    cis = np.array(model.coupled_indices, dtype=np.int64)
    n_ch = cis.size
    n = model.n_variables
    ulp = float(np.finfo(float).eps)
    gemm = _blas_gemm("dgemm" if precision == "double" else "sgemm")
    A_, B_, E_ = DP_A.copy(), DP_B.copy(), DP_E.copy()

    @numba.njit(nogil=True)
    def coupling_product(W, X, WT, ints, flts, chars):
        for k in range(n_ch):
            Xc = X[cis[k]:]
            Wk = WT[k]
            gemm(chars.ctypes, chars.ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[1:].ctypes, flts[0:].ctypes,
                 Xc.ctypes, ints[2:].ctypes, W.ctypes, ints[1:].ctypes, flts[1:].ctypes, Wk.ctypes,
                 ints[0:].ctypes)

    @numba.njit(nogil=True)
    def combine(Vf, KVf, s, coef, hh, Xf):
        # X = V + hh sum_{r<s} coef[r] KV[r] (flat) in one pass: one loop per stage with the terms written
        # out (three arrays, so that LLVM vectorises it), the zero weight of the Dormand-Prince stage 2 in
        # the solution skipped
        L = Vf.shape[0]
        c0 = hh * coef[0]
        if s == 1:
            for j in range(L):
                Xf[j] = Vf[j] + c0 * KVf[0, j]
            return
        c1 = hh * coef[1]
        if s == 2:
            for j in range(L):
                Xf[j] = Vf[j] + c0 * KVf[0, j] + c1 * KVf[1, j]
            return
        c2 = hh * coef[2]
        if s == 3:
            for j in range(L):
                Xf[j] = Vf[j] + c0 * KVf[0, j] + c1 * KVf[1, j] + c2 * KVf[2, j]
            return
        c3 = hh * coef[3]
        if s == 4:
            for j in range(L):
                Xf[j] = Vf[j] + c0 * KVf[0, j] + c1 * KVf[1, j] + c2 * KVf[2, j] + c3 * KVf[3, j]
            return
        c4 = hh * coef[4]
        if s == 5:
            for j in range(L):
                Xf[j] = (Vf[j] + c0 * KVf[0, j] + c1 * KVf[1, j] + c2 * KVf[2, j] + c3 * KVf[3, j]
                         + c4 * KVf[4, j])
            return
        c5 = hh * coef[5]
        if c1 == 0.0:  # the solution weights B (b_2 = 0)
            for j in range(L):
                Xf[j] = (Vf[j] + c0 * KVf[0, j] + c2 * KVf[2, j] + c3 * KVf[3, j] + c4 * KVf[4, j]
                         + c5 * KVf[5, j])
        else:
            for j in range(L):
                Xf[j] = (Vf[j] + c0 * KVf[0, j] + c1 * KVf[1, j] + c2 * KVf[2, j] + c3 * KVf[3, j]
                         + c4 * KVf[4, j] + c5 * KVf[5, j])

    @numba.njit(nogil=True)
    def tangent_stage(J, g, sv, X, WT, KV, Wg, ints, flts, chars):
        coupling_product(Wg, X, WT, ints, flts, chars)
        tangent_apply(J, g, sv, X, WT, KV)

    @numba.njit(nogil=True)
    def tangent_steps(J, g, sv, Vf, KVf, X, Xf, Vnew, Vnf, KV, WT, Wg, hh, rtol, atol, ints, flts, chars,
                      estimate):
        # stages 2..7 of the tangent block (KV[0] given): Vnew and KV[6] = Df(y_new) Vnew (first same as
        # last); returns the RMS norm of the tangent block's error estimate if asked (else -1)
        for s in range(1, 7):
            combine(Vf, KVf, s, A_[s] if s < 6 else B_, hh, Xf if s < 6 else Vnf)
            tangent_stage(J[s], g[s], sv, X if s < 6 else Vnew, WT, KV[s], Wg, ints, flts, chars)
        if not estimate:
            return -1.0
        return column_error_norm(Vf.reshape(X.shape), Vnew, KV, hh, rtol, atol)

    @numba.njit(nogil=True)
    def column_error_norm(V, Vnew, KV, hh, rtol, atol):
        # per column: RMS of the error estimate over atol + rtol RMS(column) (the columns' directions and
        # lengths are what the exponents depend on, not each component relative to itself); RMS over columns
        D, kb = V.shape
        e2 = np.zeros(kb)
        v2 = np.zeros(kb)
        w2 = np.zeros(kb)
        e0, e2_, e3, e4, e5, e6 = E_[0], E_[2], E_[3], E_[4], E_[5], E_[6]  # E_[1] == 0
        for i in range(D):
            for m in range(kb):
                acc = (e0 * KV[0, i, m] + e2_ * KV[2, i, m] + e3 * KV[3, i, m] + e4 * KV[4, i, m]
                       + e5 * KV[5, i, m] + e6 * KV[6, i, m])
                e2[m] += acc * acc
                v2[m] += V[i, m] * V[i, m]
                w2[m] += Vnew[i, m] * Vnew[i, m]
        total = 0.0
        for m in range(kb):
            scale = atol + rtol * math.sqrt(max(v2[m], w2[m]) / D)
            total += e2[m] / D * (hh / scale) ** 2
        enV = math.sqrt(total / kb)
        return enV if math.isfinite(enV) else math.inf

    @numba.njit(nogil=True)
    def dopri5_block(y, V, p, W, Wg, t0, t1, h, rtol, atol, tangent_error, max_steps, stats,
                     K, J, g, Ys, ynew, err, KV, X, Vnew, WT, C, yc, ints, flts, chars, s64, sv):
        N = W.shape[0]
        kb = V.shape[1]
        D = y.shape[0]
        L = D * kb
        ints[0] = kb
        ints[1] = N
        ints[2] = n * kb
        flts[0] = 1.0
        flts[1] = 0.0
        strengths(p, s64)
        for k in range(n_ch):
            sv[k] = s64[k]
        Vf = V.reshape(L)
        Xf = X.reshape(L)
        Vnf = Vnew.reshape(L)
        KVf = KV.reshape((7, L))
        node_fields(y, p, W, C, yc, K[0], J[0], g[0])
        stats[0] += 1
        kv0 = False  # KV[0] = Df(y) V is known (first same as last)
        enV = 0.0
        t = t0
        while t < t1:
            if stats[1] + stats[2] >= max_steps:
                return st_budget, h
            min_step = 10.0 * ulp * max(abs(t), 1.0)
            if h < min_step:
                h = min_step
            rejected = False
            finite = True
            while True:
                if h < min_step:
                    if not finite:
                        for i in range(D):
                            y[i] = ynew[i]
                        return st_nonfinite, h
                    return st_small, h
                # equal steps to t1: the last step of a block is never a sliver
                q = (t1 - t) / h
                if q <= 1.0:
                    tn = t1
                else:
                    tn = t + (t1 - t) / math.ceil(q)
                hh = tn - t
                for s in range(1, 7):
                    target = Ys[s] if s < 6 else ynew
                    coef = A_[s] if s < 6 else B_
                    for i in range(D):
                        acc = 0.0
                        for r in range(s):
                            acc += coef[r] * K[r, i]
                        target[i] = y[i] + hh * acc
                    node_fields(target, p, W, C, yc, K[s], J[s], g[s])
                stats[0] += 6
                finite = True
                acc2 = 0.0
                for i in range(D):
                    acc = 0.0
                    for r in range(7):
                        acc += E_[r] * K[r, i]
                    e = hh * acc / (atol + rtol * max(abs(y[i]), abs(ynew[i])))
                    if not (math.isfinite(ynew[i]) and math.isfinite(e)):
                        finite = False
                    acc2 += e * e
                en = math.sqrt(acc2 / D) if finite else math.inf
                if en < 1.0 and tangent_error:
                    if not kv0:
                        tangent_stage(J[0], g[0], sv, V, WT, KV[0], Wg, ints, flts, chars)
                        kv0 = True
                    enV = tangent_steps(J, g, sv, Vf, KVf, X, Xf, Vnew, Vnf, KV, WT, Wg, hh, rtol, atol, ints,
                                        flts, chars, True)
                    en = max(en, enV)
                if en < 1.0:
                    fac = 10.0 if en == 0.0 else min(10.0, 0.9 * en ** (-0.2))
                    if rejected:
                        fac = min(1.0, fac)
                    hnext = hh * fac
                    break
                fac = max(0.2, 0.9 * en ** (-0.2)) if math.isfinite(en) else 0.2
                h = hh * fac
                rejected = True
                stats[2] += 1
                if stats[1] + stats[2] >= max_steps:
                    return st_budget, h
            if not tangent_error:
                # the tangent stages of the accepted step (node Jacobians kept from the state stages);
                # their error estimate is recorded (on the first step of the interval: a pass over all
                # seven stages costs about a sixth of a step), not used
                first = not kv0
                if first:
                    tangent_stage(J[0], g[0], sv, V, WT, KV[0], Wg, ints, flts, chars)
                    kv0 = True
                enV = tangent_steps(J, g, sv, Vf, KVf, X, Xf, Vnew, Vnf, KV, WT, Wg, hh, rtol, atol, ints, flts,
                                    chars, first)
            if enV >= 0.0:
                stats[5] += 1
                if enV > stats[3]:
                    stats[3] = enV
                if enV > 1.0:
                    stats[4] += 1
            for j in range(L):
                Vf[j] = Vnf[j]
                KVf[0, j] = KVf[6, j]
            for i in range(D):
                y[i] = ynew[i]
                K[0, i] = K[6, i]
            J[0, :, :, :] = J[6]
            g[0, :, :, :] = g[6]
            t = tn
            stats[1] += 1
            h = hnext
        return st_ok, h

    return dopri5_block


def dopri5_lyapunov_workspace(N: int, n: int, kb: int, precision: str = "double", m: int = 1):
    """Scratch arrays of :func:`dopri5_lyapunov_kernels`' ``dopri5_block`` (one set per thread)."""
    D = N * n
    dt = TANGENT_DTYPES[precision]
    return (np.empty((7, D)), np.empty((7, N, n, n), dt), np.empty((7, N, n, m), dt), np.empty((7, D)),
            np.empty(D), np.empty(D), np.empty((7, D, kb), dt), np.empty((D, kb), dt), np.empty((D, kb), dt),
            np.empty((m, N, kb), dt), np.empty((N, m)), np.empty(N), np.empty(3, np.int32), np.empty(8, dt),
            np.array([ord("N")], np.int8), np.empty(m), np.empty(m, dt))


def lyapunov_workspace(N: int, n: int, kb: int, precision: str = "double", m: int = 1):
    """Scratch arrays of :func:`lyapunov_kernels`' ``rk4_block`` (one set per thread; ``m`` channels)."""
    D = N * n
    dt = TANGENT_DTYPES[precision]
    return (np.empty((D, kb), dt), np.empty((D, kb), dt), np.empty((D, kb), dt), np.empty((m, N, kb), dt),
            np.empty(D), np.empty(D), np.empty((N, m)), np.empty(N),
            np.empty((N, n, n), dt), np.empty((N, n, m), dt), np.empty(D), np.empty(3, np.int32), np.empty(8, dt),
            np.array([ord("N")], np.int8), np.empty(m), np.empty(m, dt))


