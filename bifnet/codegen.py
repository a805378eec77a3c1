"""Numerical code generated from symbolic systems, once, memoised.

Each function takes ``(x, p)`` with ``x`` the state vector and ``p`` the
parameter vector in the system's parameter order and returns a numpy array.
The AUTO-07p callbacks live in :mod:`bifnet.continuation._auto`.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy

from bifnet.systems import SymbolicSystem, mode_jacobian
from bifnet.model import NodeModel


def _lambdify(args, expr, modules="numpy"):
    return sympy.lambdify(args, expr, modules=modules, cse=True)


@functools.lru_cache(maxsize=None)
def rhs_function(system: SymbolicSystem):
    """``f(x, p) -> ndarray`` for a closed system (or ``f(x, p, inputs)``)."""
    args = [list(system.state), list(system.parameters)]
    if system.inputs:
        args.append(list(system.inputs))
    fn = _lambdify(args, list(system.rhs))
    return lambda *a: np.asarray(fn(*a), dtype=float)


@functools.lru_cache(maxsize=None)
def jacobian_function(system: SymbolicSystem):
    """``J(x, p) -> ndarray (n, n)``: the exact state Jacobian."""
    args = [list(system.state), list(system.parameters)]
    if system.inputs:
        args.append(list(system.inputs))
    fn = _lambdify(args, system.jacobian)
    return lambda *a: np.asarray(fn(*a), dtype=float)


@functools.lru_cache(maxsize=None)
def mode_jacobian_functions(model: NodeModel):
    """``(A(x, p), B(x, p))`` so that ``J(Lambda) = A + Lambda B`` at a homogeneous state."""
    mj = mode_jacobian(model)
    args = [list(mj.state), list(mj.parameters)]
    fa = _lambdify(args, mj.A)
    fb = _lambdify(args, mj.B)
    return (lambda x, p: np.asarray(fa(x, p), dtype=float),
            lambda x, p: np.asarray(fb(x, p), dtype=float))


def _expr_code(expr, names: dict) -> str:
    from sympy.printing.numpy import NumPyPrinter

    code = NumPyPrinter({"fully_qualified_modules": True}).doprint(expr.xreplace(names))
    return code


@functools.lru_cache(maxsize=None)
def numba_node_kernels(model: NodeModel):
    """Compiled scalar kernels of the node for the network integrator.

    Returns ``(rhs, jac)`` where ``rhs(x, p, C, out)`` writes ``f(x, C)`` into
    ``out`` and ``jac(x, p, C, J, dfdC)`` writes ``D_x f`` into ``J`` (n x n) and
    ``df/dC`` into ``dfdC`` (n). Both are numba ``njit`` functions taking 1-D
    float arrays, usable from other jitted code.
    """
    import numba

    x = model.state_symbols
    p = model.parameter_symbols
    C = model.input_symbol
    xs = {s: sympy.Symbol(f"x[{i}]") for i, s in enumerate(x)}
    ps = {s: sympy.Symbol(f"p[{i}]") for i, s in enumerate(p)}
    subs = {**xs, **ps, C: sympy.Symbol("C")}
    f = sympy.Matrix(model.equations)
    J = f.jacobian(sympy.Matrix(x))
    dfdC = f.diff(C)

    def build(name, args, targets):
        exprs = [e for _, e in targets]
        reps, reduced = sympy.cse([e.xreplace(subs) for e in exprs],
                                  symbols=sympy.numbered_symbols("_t"))
        lines = [f"def {name}({', '.join(args)}):"]
        for sym, e in reps:
            lines.append(f"    {sym} = {_expr_code(e, {})}")
        for (target, _), e in zip(targets, reduced):
            lines.append(f"    {target} = {_expr_code(e, {})}")
        lines.append("    return None")
        src = "\n".join(lines)
        namespace = {"numpy": np, "math": __import__("math")}
        exec(compile(src, f"<bifnet:{model.name}:{name}>", "exec"), namespace)
        return numba.njit(cache=False, fastmath=False, nogil=True)(namespace[name]), src

    n = len(x)
    rhs, _ = build("node_rhs", ["x", "p", "C", "out"], [(f"out[{i}]", f[i]) for i in range(n)])
    jac_targets = [(f"J[{i}, {j}]", J[i, j]) for i in range(n) for j in range(n)]
    jac_targets += [(f"dfdC[{i}]", dfdC[i]) for i in range(n)]
    jac, _ = build("node_jac", ["x", "p", "C", "J", "dfdC"], jac_targets)
    return rhs, jac
