"""Symbolic systems generated from a :class:`~bifnet.model.NodeModel`.

Nobody writes these by hand:

* the **node** vector field ``f(x, C; p)`` with the network input ``C`` as an
  explicit input;
* the **homogeneous** system ``f_hom(x; p) = f(x, eps * c(x); p)``: with a
  row-normalised connectome every row sums to one, so when all nodes share the
  state ``x`` each receives ``C = eps * c(x)``;
* the **eigenmode-reduced Jacobian** ``J(Lambda) = A + Lambda * B`` with
  ``A = D_x f`` at ``C = eps c(x)`` and ``B = eps (df/dC) D_x c``
  (:func:`mode_jacobian`);
* the **augmented** system for transverse bifurcations
  ``x' = f_hom(x)``, ``y' = f(y, eps[Lambda c(y) + (1 - Lambda) c(x)])``, whose
  solutions with ``y = x`` are homogeneous and whose Jacobian there is block
  triangular with blocks ``J_hom`` and ``J(Lambda)``.

See ``docs/science.md`` for the derivation.
"""

from __future__ import annotations

import dataclasses
import functools

import sympy

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
        inputs=(model.input_symbol,),
    )


def _strength(model: NodeModel) -> sympy.Symbol:
    return sympy.Symbol(model.coupling.strength, real=True)


@functools.lru_cache(maxsize=None)
def homogeneous_system(model: NodeModel) -> SymbolicSystem:
    """The self-coupled node: ``C = eps * c(x)``.

    Exact for any connectome whose rows sum to one.
    """
    x = model.state_symbols
    c = x[model.coupled_index]
    rhs = tuple(sympy.expand_mul(eq.subs(model.input_symbol, _strength(model) * c)) for eq in model.equations)
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

    ``A`` is the node Jacobian with the input frozen at its homogeneous value
    (``D_x f`` at ``C = eps c(x)``), ``B = eps (df/dC) (D_x c)`` the rank-one
    coupling term. ``A + B`` is the homogeneous Jacobian (mode 1, ``Lambda = 1``).
    """

    A: sympy.Matrix
    B: sympy.Matrix
    state: tuple[sympy.Symbol, ...]
    parameters: tuple[sympy.Symbol, ...]

    def at(self, Lambda) -> sympy.Matrix:
        """The symbolic ``J(Lambda)`` (``Lambda`` may be a number or a symbol)."""
        return self.A + Lambda * self.B


@functools.lru_cache(maxsize=None)
def mode_jacobian(model: NodeModel) -> ModeJacobian:
    """Eigenmode-reduced Jacobian of the network at a homogeneous state.

    Notes
    -----
    Linearising ``x_i' = f(x_i, eps sum_j W_ij c(x_j))`` at ``x_i = x`` gives
    ``d(dx_i)/dt = D_x f dx_i + eps (df/dC) D_x c sum_j W_ij dx_j``. Expanding
    ``dx`` on the eigenvectors of ``W`` (``W phi = Lambda phi``) decouples it
    into ``N`` blocks ``D_x f + Lambda eps (df/dC) D_x c``.
    """
    x = sympy.Matrix(model.state_symbols)
    C = model.input_symbol
    eps = _strength(model)
    c = model.state_symbols[model.coupled_index]
    f = sympy.Matrix(model.equations)
    hom = {C: eps * c}
    A = f.jacobian(x).subs(hom)
    dfdC = f.diff(C).subs(hom)
    dc = sympy.Matrix([[c]]).jacobian(x)
    B = eps * dfdC * dc
    return ModeJacobian(A=sympy.simplify(A), B=sympy.simplify(B), state=model.state_symbols,
                        parameters=model.parameter_symbols)


@functools.lru_cache(maxsize=None)
def augmented_system(model: NodeModel, homogeneous: str = "flow") -> SymbolicSystem:
    """The augmented system in ``z = (x, y)`` for transverse bifurcations.

    ``y' = f(y, eps [Lambda c(y) + (1 - Lambda) c(x)])`` with ``Lambda`` an
    extra (real) parameter. On ``y = x`` the Jacobian is block lower-triangular
    with the ``y`` block ``J(Lambda)``, so bifurcations of the ``y`` block are
    the transverse instabilities of mode ``Lambda``.

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
    hom = homogeneous_system(model)
    x = model.state_symbols
    y = tuple(sympy.Symbol(f"{s}__y", real=True) for s in x)
    k = model.coupled_index
    eps = _strength(model)
    C = model.input_symbol
    swap = dict(zip(x, y))
    y_rhs = tuple(
        sympy.expand_mul(eq.xreplace(swap).subs(C, eps * (LAMBDA * y[k] + (1 - LAMBDA) * x[k])))
        for eq in model.equations
    )
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


@functools.lru_cache(maxsize=None)
def complex_augmented_system(model: NodeModel) -> SymbolicSystem:
    """The augmented system for a complex ``Lambda = Lambda + i Lambda_imag``.

    ``z = (x, a, b)`` with ``y = a + i b``: ``x' = -J_hom^T f_hom(x)`` (the
    gradient form of :func:`augmented_system`) and ``a' + i b' =
    f(y, eps [Lambda c(y) + (1 - Lambda) c(x)])`` continued analytically to
    complex ``y`` and split into real and imaginary parts. On ``a = x, b = 0``
    its Jacobian has the ``(a, b)`` block ``[[Re J, -Im J], [Im J, Re J]]``
    with ``J = J(Lambda)``, whose eigenvalues are those of ``J(Lambda)`` and
    their conjugates: an eigenvalue of ``J(Lambda)`` crossing the imaginary
    axis is a Hopf pair for AUTO.
    """
    real_part = augmented_system(model, "gradient")
    x = model.state_symbols
    a = tuple(sympy.Symbol(f"{s}__a", real=True) for s in x)
    b = tuple(sympy.Symbol(f"{s}__b", real=True) for s in x)
    k = model.coupled_index
    eps = _strength(model)
    C = model.input_symbol
    lam = LAMBDA + sympy.I * LAMBDA_IMAG
    y = {s: ai + sympy.I * bi for s, ai, bi in zip(x, a, b)}
    a_rhs, b_rhs = [], []
    for eq in model.equations:
        value = sympy.expand(eq.subs({**y, C: eps * (lam * (a[k] + sympy.I * b[k]) + (1 - lam) * x[k])},
                                     simultaneous=True))
        re, im = value.as_real_imag()
        a_rhs.append(sympy.expand(re))
        b_rhs.append(sympy.expand(im))
    n = model.n_variables
    return SymbolicSystem(
        name=f"{model.name}:augmented-complex",
        kind="augmented",
        state=x + a + b,
        parameters=model.parameter_symbols + (LAMBDA, LAMBDA_IMAG),
        rhs=tuple(real_part.rhs[:n]) + tuple(a_rhs) + tuple(b_rhs),
        model=model,
    )
