"""Symbolic systems generated from a :class:`~bifnet.model.NodeModel`.

Nobody writes these by hand:

* the **node** vector field ``f(x, C; p)`` with the network input ``C`` as an
  explicit input;
* the **homogeneous** system ``f_hom(x; p) = f(x, C_hom(x); p)``: additive
  coupling through a row-normalised matrix gives every node ``C_k = s_k c_k(x)``
  when all nodes share the state ``x``; diffusive coupling gives ``C_k = 0``;
* the **eigenmode-reduced Jacobian** ``J(Lambda) = A + Lambda * B`` with
  ``A = D_x f`` at ``C_hom`` and ``B = sigma sum_k s_k (df/dC_k) D_x c_k``
  (:func:`mode_jacobian`), where ``Lambda`` is an eigenvalue of the scheme's
  mode operator ``M`` (``P = D^-1 W`` or the Laplacian ``L``) and ``sigma`` the
  sign with which ``M`` enters the coupling (``+1`` for ``P``, ``-1`` for
  ``L``: ``C = -s L c``);
* the **augmented** system for transverse bifurcations
  ``x' = f_hom(x)``, ``y' = f(y, C_k = sigma s_k [Lambda_u c_k(x) + Lambda (c_k(y) - c_k(x))])``
  (``Lambda_u`` the eigenvalue of the uniform mode, 1 or 0), whose
  solutions with ``y = x`` are homogeneous and whose Jacobian there is block
  triangular with blocks ``J_hom`` and ``J(Lambda)``.

In every scheme ``J_hom = J(Lambda_u)``. See ``docs/science.md`` and
``docs/model-spec.md`` for the derivation.
"""

from __future__ import annotations

import dataclasses
import functools

import sympy

from bifnet.errors import ModelError
from bifnet.model import NodeModel

LAMBDA = sympy.Symbol("Lambda", real=True)
LAMBDA_IMAG = sympy.Symbol("Lambda_imag", real=True)


@dataclasses.dataclass(frozen=True, eq=False)
class SymbolicSystem:
    """An ODE system ``dz/dt = rhs(z; parameters)`` held symbolically.

    Attributes
    ----------
    name : str
        ``"<model>:<kind>"``.
    kind : str
        ``"node"``, ``"homogeneous"`` or ``"augmented"``.
    state : tuple of sympy.Symbol
        State symbols, in order.
    parameters : tuple of sympy.Symbol
        Parameter symbols, in order: the model's, then extras (``Lambda`` for
        the augmented system).
    rhs : tuple of sympy.Expr
        Right-hand sides, one per state symbol.
    inputs : tuple of sympy.Symbol
        External inputs that are neither state nor parameters (the node
        system's coupling input ``C``); empty for closed systems.
    model : NodeModel
        The model it was generated from.
    """

    name: str
    kind: str
    state: tuple[sympy.Symbol, ...]
    parameters: tuple[sympy.Symbol, ...]
    rhs: tuple[sympy.Expr, ...]
    model: NodeModel
    inputs: tuple[sympy.Symbol, ...] = ()

    @property
    def dimension(self) -> int:
        return len(self.state)

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(str(s) for s in self.state)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(str(s) for s in self.parameters)

    @functools.cached_property
    def jacobian(self) -> sympy.Matrix:
        """Exact Jacobian with respect to the state."""
        return sympy.Matrix(self.rhs).jacobian(sympy.Matrix(self.state))

    @functools.cached_property
    def parameter_jacobian(self) -> sympy.Matrix:
        """Exact derivatives of the right-hand side with respect to the parameters."""
        return sympy.Matrix(self.rhs).jacobian(sympy.Matrix(self.parameters))


@functools.lru_cache(maxsize=None)
def node_system(model: NodeModel) -> SymbolicSystem:
    """The node vector field with the network input as an explicit input."""
    return SymbolicSystem(
        name=f"{model.name}:node",
        kind="node",
        state=model.state_symbols,
        parameters=model.parameter_symbols,
        rhs=tuple(model.equations),
        model=model,
        inputs=model.input_symbols,
    )


def _channels(model: NodeModel):
    """``(C_k, s_k, index_k)`` of every channel."""
    return list(zip(model.input_symbols, model.strength_expressions, model.coupled_indices))


def _input_values(model: NodeModel, x, Lambda=None, y=None) -> dict:
    """``C_k -> sigma s_k [Lambda_u c_k(x) + Lambda (c_k(y) - c_k(x))]`` (homogeneous when ``y`` is None)."""
    coupling = model.coupling
    sign, uniform = coupling.mode_sign, coupling.uniform_eigenvalue
    values = {}
    for C, s, k in _channels(model):
        value = uniform * x[k]
        if y is not None:
            value = value + Lambda * (y[k] - x[k])
        values[C] = sign * s * value
    return values


@functools.lru_cache(maxsize=None)
def homogeneous_system(model: NodeModel) -> SymbolicSystem:
    """The self-coupled node: every node in the same state ``x``.

    Additive: ``C_k = s_k c_k(x)`` (exact for a matrix whose rows sum to
    one); diffusive: ``C_k = 0`` (the Laplacian's rows sum to zero); a model
    without coupling: its equations as they are.
    """
    x = model.state_symbols
    if model.coupling is None:
        rhs = tuple(model.equations)
    else:
        hom = _input_values(model, x)
        rhs = tuple(sympy.expand_mul(eq.subs(hom)) for eq in model.equations)
    return SymbolicSystem(
        name=f"{model.name}:homogeneous",
        kind="homogeneous",
        state=x,
        parameters=model.parameter_symbols,
        rhs=rhs,
        model=model,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class ModeJacobian:
    """``J(Lambda) = A + Lambda * B`` at a homogeneous state.

    ``A`` is the node Jacobian with the inputs frozen at their homogeneous
    values, ``B = sigma sum_k s_k (df/dC_k) (D_x c_k)`` the coupling term
    (one column per coupled variable). ``Lambda`` is an eigenvalue of the
    mode operator (``P`` additive, ``L`` diffusive); ``A + Lambda_u B`` is the
    homogeneous Jacobian (mode 1: ``Lambda_u = 1`` for ``P``, ``0`` for ``L``).
    """

    A: sympy.Matrix
    B: sympy.Matrix
    state: tuple[sympy.Symbol, ...]
    parameters: tuple[sympy.Symbol, ...]
    uniform: float = 1.0

    def at(self, Lambda) -> sympy.Matrix:
        """The symbolic ``J(Lambda)`` (``Lambda`` may be a number or a symbol)."""
        return self.A + Lambda * self.B


@functools.lru_cache(maxsize=None)
def mode_jacobian(model: NodeModel) -> ModeJacobian:
    """Eigenmode-reduced Jacobian of the network at a homogeneous state.

    Notes
    -----
    The network input of channel ``k`` is ``C_k,i = s_k sum_j G_ij c_k(x_j)``
    with ``G = sigma M`` (``G = P`` additive, ``G = -L`` diffusive).
    Linearising ``x_i' = f(x_i, C_i)`` at ``x_i = x`` gives
    ``d(dx_i)/dt = D_x f dx_i + sum_k s_k (df/dC_k) D_x c_k sum_j G_ij dx_j``.
    Expanding ``dx`` on the eigenvectors of ``M`` (``M phi = Lambda phi``)
    decouples it into ``N`` blocks ``A + Lambda B``.
    """
    x = sympy.Matrix(model.state_symbols)
    f = sympy.Matrix(model.equations)
    n = model.n_variables
    if model.coupling is None:  # a single node: J = A for every "mode" (B = 0)
        return ModeJacobian(A=f.jacobian(x), B=sympy.zeros(n, n), state=model.state_symbols,
                            parameters=model.parameter_symbols, uniform=1.0)
    hom = _input_values(model, model.state_symbols)
    A = f.jacobian(x).subs(hom)
    B = sympy.zeros(n, n)
    for C, s, k in _channels(model):
        B[:, k] += model.coupling.mode_sign * s * f.diff(C).subs(hom)
    return ModeJacobian(A=sympy.simplify(A), B=sympy.simplify(B), state=model.state_symbols,
                        parameters=model.parameter_symbols, uniform=model.coupling.uniform_eigenvalue)


@functools.lru_cache(maxsize=None)
def augmented_system(model: NodeModel, homogeneous: str = "flow") -> SymbolicSystem:
    """The augmented system in ``z = (x, y)`` for transverse bifurcations.

    ``y' = f(y, C_k = sigma s_k [Lambda_u c_k(x) + Lambda (c_k(y) - c_k(x))])``
    with ``Lambda`` an extra (real) parameter, the eigenvalue of the scheme's
    mode operator (for additive coupling ``eps [Lambda c(y) + (1 - Lambda) c(x)]``).
    On ``y = x`` the Jacobian is block lower-triangular with the ``y`` block
    ``J(Lambda)``, so bifurcations of the ``y`` block are the transverse
    instabilities of mode ``Lambda``.

    Parameters
    ----------
    model : NodeModel
    homogeneous : {"flow", "gradient"}
        ``"flow"``: ``x' = f_hom(x)`` (needed for cycles). ``"gradient"``:
        ``x' = -J_hom(x)^T f_hom(x)``, which has the same equilibria (where
        ``J_hom`` is invertible) but the Jacobian ``-J_hom^T J_hom`` there:
        symmetric negative definite, so the ``x`` block never has a Hopf
        pair. AUTO-07p then sees only the transverse Hopf points; with the true
        flow a homogeneous and a transverse pair crossing close together hide
        each other from AUTO's Hopf test function.
    """
    if homogeneous not in ("flow", "gradient"):
        raise ValueError(f"homogeneous must be 'flow' or 'gradient', got {homogeneous!r}")
    model.require_coupling("the augmented (transverse) system")
    hom = homogeneous_system(model)
    x = model.state_symbols
    y = tuple(sympy.Symbol(f"{s}__y", real=True) for s in x)
    swap = dict(zip(x, y))
    inputs = _input_values(model, x, LAMBDA, y)
    y_rhs = tuple(sympy.expand_mul(eq.xreplace(swap).subs(inputs)) for eq in model.equations)
    if homogeneous == "flow":
        x_rhs = hom.rhs
    else:
        F = sympy.Matrix(hom.rhs)
        x_rhs = tuple(-(hom.jacobian.T * F))
    return SymbolicSystem(
        name=f"{model.name}:augmented" + ("" if homogeneous == "flow" else "-gradient"),
        kind="augmented",
        state=x + y,
        parameters=model.parameter_symbols + (LAMBDA,),
        rhs=tuple(x_rhs) + y_rhs,
        model=model,
    )


def _real_imag(value):
    """``(re, im)`` of an expression in real symbols and ``I``, free of ``re()`` and ``im()`` where sympy can.

    The expression is split as it is: expanding it first turns ``exp`` of a sum into a product of
    exponentials, whose real part sympy leaves as ``re(exp(...) exp(...))`` (the Wilson-Cowan sigmoid of
    a complex input did), which AUTO-07p's transpiler cannot compile. Then with ``expand(complex=True)``."""
    re, im = value.as_real_imag()
    if re.has(sympy.re, sympy.im) or im.has(sympy.re, sympy.im):
        re, im = sympy.expand(value, complex=True).as_real_imag()
    return re, im


def _smaller(*forms):
    """The form with the fewest operations: expanding the real and imaginary parts of polynomial models
    collects their terms, of the Wilson-Cowan sigmoid it triples them (2580 against 856 operations, and
    the Hopf system's derivatives took minutes)."""
    return min(forms, key=sympy.count_ops)


@functools.lru_cache(maxsize=None)
def complex_augmented_system(model: NodeModel) -> SymbolicSystem:
    """The augmented system for a complex ``Lambda = Lambda + i Lambda_imag``.

    ``z = (x, a, b)`` with ``y = a + i b``: ``x' = -J_hom^T f_hom(x)`` (the
    gradient form of :func:`augmented_system`) and ``a' + i b' =
    f(y, C(x, y; Lambda))`` (the inputs of :func:`augmented_system`)
    continued analytically to complex ``y`` and split into real and imaginary
    parts. On ``a = x, b = 0`` its Jacobian has the ``(a, b)`` block
    ``[[Re J, -Im J], [Im J, Re J]]`` with ``J = J(Lambda)``, whose eigenvalues
    are those of ``J(Lambda)`` and their conjugates: an eigenvalue of
    ``J(Lambda)`` crossing the imaginary axis is a Hopf pair for AUTO.
    """
    real_part = augmented_system(model, "gradient")
    x = model.state_symbols
    a = tuple(sympy.Symbol(f"{s}__a", real=True) for s in x)
    b = tuple(sympy.Symbol(f"{s}__b", real=True) for s in x)
    lam = LAMBDA + sympy.I * LAMBDA_IMAG
    y = {s: ai + sympy.I * bi for s, ai, bi in zip(x, a, b)}
    yc = tuple(ai + sympy.I * bi for ai, bi in zip(a, b))
    inputs = _input_values(model, x, lam, yc)
    a_rhs, b_rhs = [], []
    for eq, name in zip(model.equations, model.variable_names):
        re, im = _real_imag(eq.subs({**y, **inputs}, simultaneous=True))
        if re.has(sympy.re, sympy.im) or im.has(sympy.re, sympy.im):
            raise ModelError(f"model {model.name!r}: the right-hand side of {name} cannot be split into real and "
                             f"imaginary parts for complex states (needed for modes with complex Lambda): "
                             f"{sympy.sstr(re)[:120]}")
        a_rhs.append(_smaller(re, sympy.expand(re)))
        b_rhs.append(_smaller(im, sympy.expand(im)))
    n = model.n_variables
    return SymbolicSystem(
        name=f"{model.name}:augmented-complex",
        kind="augmented",
        state=x + a + b,
        parameters=model.parameter_symbols + (LAMBDA, LAMBDA_IMAG),
        rhs=tuple(real_part.rhs[:n]) + tuple(a_rhs) + tuple(b_rhs),
        model=model,
    )


@functools.lru_cache(maxsize=None)
def transverse_fold_system(model: NodeModel, parameter: str) -> SymbolicSystem:
    """The defining system of a transverse fold (real eigenvalue 0 of ``J(Lambda)``) of equilibria.

    State ``z = (x, w, p)`` with ``p`` the model parameter ``parameter``
    moved into the state, and the ``2n + 1`` equations

    ``f_hom(x; p) = 0``, ``J(Lambda; x, p) w = 0``, ``w . w - 1 = 0``.

    Its zeros are the homogeneous equilibria at which mode ``Lambda`` has a
    zero eigenvalue, with ``w`` the null vector; they are regular where the
    fold is generic (``J_hom`` invertible, a simple zero eigenvalue crossing
    with non-zero speed), so continuing them in one more parameter (a model
    parameter or ``Lambda``) traces the transverse fold curve.

    Notes
    -----
    On the augmented system a real transverse eigenvalue crossing zero is a
    *branch point* (the homogeneous branch ``y = x`` continues through it),
    which AUTO-07p's test functions do not report reliably; this system
    turns it into an ordinary regular solution curve. Transverse Hopf points
    keep the augmented system (a Hopf point there is generic).
    """
    model.check_parameter_names([parameter])
    x = model.state_symbols
    w = tuple(sympy.Symbol(f"{s}__w", real=True) for s in x)
    hom = homogeneous_system(model)
    mj = mode_jacobian(model)
    J = mj.at(LAMBDA)
    rhs = tuple(hom.rhs) + tuple(J * sympy.Matrix(w)) + (sum(wi ** 2 for wi in w) - 1,)
    p = sympy.Symbol(parameter, real=True)
    return SymbolicSystem(
        name=f"{model.name}:transverse-fold[{parameter}]",
        kind="transverse-fold",
        state=x + w + (p,),
        parameters=tuple(s for s in model.parameter_symbols if s != p) + (LAMBDA,),
        rhs=tuple(sympy.expand_mul(e) for e in rhs),
        model=model,
    )
