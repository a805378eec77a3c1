"""Numerical code generated from symbolic systems, once, memoised.

Each function takes ``(x, p)`` with ``x`` the state vector and ``p`` the
parameter vector in the system's parameter order and returns a numpy array.
The AUTO-07p callbacks live in :mod:`bifnet.continuation._auto`.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from pathlib import Path

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


def node_kernel_source(model: NodeModel) -> str:
    """Python source of the node kernels ``node_rhs``, ``node_jac`` and ``strengths`` (undecorated).

    ``node_rhs(x, p, C, i, out)`` writes ``f(x, C[i])`` into ``out`` (row ``i``
    of ``C`` holds the ``m`` channel inputs of node ``i``; passing the row
    index rather than a row view keeps the node loops as fast as with one
    scalar input); ``node_jac(x, p, C, i, J, dfdC)`` writes ``D_x f``
    into ``J`` (n x n) and ``df/dC_k`` into ``dfdC[:, k]`` (n x m);
    ``strengths(p, s)`` writes each channel's strength into ``s`` (m).
    Common subexpressions are shared; only ``math`` functions are used, so the
    source compiles with numba.
    """
    x = model.state_symbols
    p = model.parameter_symbols
    inputs = model.input_symbols
    xs = {s: sympy.Symbol(f"x[{i}]") for i, s in enumerate(x)}
    ps = {s: sympy.Symbol(f"p[{i}]") for i, s in enumerate(p)}
    cs = {s: sympy.Symbol(f"C[i, {k}]") for k, s in enumerate(inputs)}
    subs = {**xs, **ps, **cs}
    f = sympy.Matrix(model.equations)
    J = f.jacobian(sympy.Matrix(x))

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
        return "\n".join(lines)

    n = len(x)
    rhs = build("node_rhs", ["x", "p", "C", "i", "out"], [(f"out[{i}]", f[i]) for i in range(n)])
    jac_targets = [(f"J[{i}, {j}]", J[i, j]) for i in range(n) for j in range(n)]
    jac_targets += [(f"dfdC[{i}, {k}]", f[i].diff(C)) for i in range(n) for k, C in enumerate(inputs)]
    jac = build("node_jac", ["x", "p", "C", "i", "J", "dfdC"], jac_targets)
    strengths = build("strengths", ["p", "s"],
                      [(f"s[{k}]", e) for k, e in enumerate(model.strength_expressions)])
    return rhs + "\n\n\n" + jac + "\n\n\n" + strengths + "\n"


def kernel_cache_dir() -> Path:
    """Folder of generated kernel modules and numba's on-disk cache of them.

    ``$BIFNET_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/bifnet/kernels``
    (``~/.cache/bifnet/kernels``); a per-user temporary folder if that
    cannot be created. Deleting it is always safe.
    """
    env = os.environ.get("BIFNET_CACHE_DIR")
    if env:
        candidates = [Path(env)]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [Path(base) / "bifnet" / "kernels"]
    candidates.append(Path(tempfile.gettempdir()) / f"bifnet-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}")
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    raise OSError(f"no writable folder for bifnet's kernel cache (tried {', '.join(map(str, candidates))})")


_modules: dict = {}
#: Kernel modules are generated and imported under this lock (cycle branches run on threads).
_modules_lock = threading.RLock()


def _pickle_complete(data: bytes, *, prefix_pickles: int = 0) -> bool:
    """Whether ``data`` holds ``prefix_pickles + 1`` complete pickles (opcodes walked, nothing executed)."""
    import io
    import pickletools

    stream = io.BytesIO(data)
    try:
        for _ in range(prefix_pickles):
            for _op in pickletools.genops(stream):
                pass
        rest = stream.read()
        for _op in pickletools.genops(rest):
            pass
    except Exception:
        return False
    return True


def heal_kernel_cache(folder: Path, module_name: str) -> list[str]:
    """Remove a module's numba cache files that are damaged (truncated or not pickles).

    numba raises ``UnpicklingError`` on a damaged entry on every later run;
    removing the module's entries makes it compile once more. Returns the
    names removed (all the module's entries when one is damaged).
    """
    import logging

    cache = folder / "__pycache__"
    try:
        entries = [p for p in cache.iterdir() if p.name.startswith(module_name + ".")]
    except OSError:
        return []
    damaged = []
    for entry in entries:
        try:
            data = entry.read_bytes()
        except OSError:
            damaged.append(entry)
            continue
        if entry.suffix == ".nbi":  # a pickled version, then a pickled index
            ok = _pickle_complete(data, prefix_pickles=1)
        elif entry.suffix == ".nbc":
            ok = _pickle_complete(data)
        else:
            continue
        if not ok:
            damaged.append(entry)
    if not damaged:
        return []
    for entry in entries:
        try:
            entry.unlink()
        except OSError:
            pass
    logging.getLogger("bifnet").warning("kernel cache: %s was damaged; removed %d cached entr%s of %s, compiling"
                                        " again", damaged[0].name, len(entries), "y" if len(entries) == 1 else "ies",
                                        module_name)
    return [e.name for e in entries]
def model_key(model: NodeModel, *extra: str) -> str:
    """A content key of ``model``'s equations, names and coupling (cheap: no symbolic work).

    Two models with the same key generate the same kernels, whatever their
    file or name; ``extra`` strings (e.g. a kernel template) enter the key.
    """
    import hashlib
    import sys

    import numba

    coupling = model.coupling
    parts = [
        numba.__version__, sys.version, repr(model.variable_names), repr(model.parameter_names),
        repr([sympy.srepr(e) for e in model.equations]),
        "none" if coupling is None else repr((coupling.scheme, coupling.laplacian,
                                              [(c.variable, c.input, sympy.srepr(c.strength_expr))
                                               for c in coupling.channels])),
        *extra,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def keyed_kernel_module(key: str, name: str, make_source):
    """Like :func:`kernel_module`, but found by ``key`` so that ``make_source()`` (symbolic
    work) runs only the first time on a machine."""
    module_name = f"_bifnet_kernels_{name}_{key}"
    if module_name in _modules:
        return _modules[module_name]
    with _modules_lock:
        return _keyed_kernel_module(module_name, make_source)


def _keyed_kernel_module(module_name: str, make_source):
    import sys

    if module_name in _modules:
        return _modules[module_name]
    path = kernel_cache_dir() / f"{module_name}.py"
    if not path.exists():
        _write_source(path, make_source())
    try:
        return _load_module(module_name, path)
    except (SyntaxError, ImportError, AttributeError, NameError):
        # a damaged source file in the cache (e.g. truncated): generate it again
        import logging

        logging.getLogger("bifnet").warning("kernel cache: %s was damaged; generating it again", path.name)
        sys.modules.pop(module_name, None)
        _write_source(path, make_source())
        return _load_module(module_name, path)


def _write_source(path: Path, source: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(source)
    os.replace(tmp, path)


def _load_module(module_name: str, path: Path):
    """Import a cached kernel module (its damaged numba cache entries removed first)."""
    import importlib.util
    import sys

    heal_kernel_cache(path.parent, module_name)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    _modules[module_name] = module
    return module


def kernel_module(source: str, name: str):
    """Import generated ``source`` as a module whose numba kernels are cached on disk.

    The source is written once to ``<kernel_cache_dir()>/<name>_<hash>.py``
    (content-addressed, so a changed model or bifnet gets a new file and
    stale files are never reused) and imported from there. Functions it
    decorates with ``numba.njit(cache=True)`` then keep their machine code in
    numba's cache next to it: the first run compiles, later runs (and other
    processes) load in a fraction of a second.
    """
    import hashlib
    import importlib.util
    import sys

    import numba

    digest = hashlib.sha256(f"{numba.__version__}\n{sys.version}\n{source}".encode()).hexdigest()[:20]
    module_name = f"_bifnet_kernels_{name}_{digest}"
    if module_name in _modules:
        return _modules[module_name]
    with _modules_lock:
        if module_name in _modules:
            return _modules[module_name]
        path = kernel_cache_dir() / f"{module_name}.py"
        if not path.exists() or path.read_text() != source:
            _write_source(path, source)
        return _load_module(module_name, path)
