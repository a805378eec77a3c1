"""The network: ``N`` copies of a node model coupled through a connectome.

State layout: ``y`` has shape ``(N, n)`` (region × variable), flattened in C
order (node-major) for the integrators. The network input of channel ``k`` of
node ``i`` is ``C_k,i = s_k sum_j G_ij c_k(x_j)`` with ``G`` the coupling
matrix of the model's scheme (:class:`bifnet.connectome.CouplingOperator`):
the row-normalised ``W`` (additive) or ``W - D = -L`` (diffusive).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from bifnet.errors import SimulationError
from bifnet.model import NodeModel

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """A network of identical nodes coupled by the model's scheme.

    Attributes
    ----------
    model : NodeModel
        The node model.
    weights : numpy.ndarray
        ``(N, N)`` coupling matrix ``G`` (read-only, C-contiguous): the
        row-normalised weights (additive) or ``W - D = -L`` (diffusive).
    parameters : mapping of str to float
        Model parameters (all of them, resolved against the model defaults).
    labels : tuple of str
        Region labels.
    connectome : Connectome or None
        The connectome it was built from, if any (labels, centres).
    operator : CouplingOperator or None
        The scheme's operator (its spectrum indexes the modes).
    """

    model: NodeModel
    weights: np.ndarray = dataclasses.field(repr=False)
    parameters: Mapping[str, float]
    labels: tuple[str, ...] = ()
    connectome: Any = dataclasses.field(default=None, repr=False)
    operator: Any = dataclasses.field(default=None, repr=False)

    @property
    def n_regions(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_variables(self) -> int:
        return self.model.n_variables

    @property
    def dimension(self) -> int:
        """Dimension ``N * n`` of the flat state."""
        return self.n_regions * self.n_variables

    @property
    def state_shape(self) -> tuple[int, int]:
        return (self.n_regions, self.n_variables)

    @functools.cached_property
    def parameter_vector(self) -> np.ndarray:
        """Parameters as a float array in ``model.parameter_names`` order."""
        vec = np.array([self.parameters[name] for name in self.model.parameter_names], dtype=float)
        vec.setflags(write=False)
        return vec

    @property
    def kernel_args(self) -> tuple[np.ndarray, np.ndarray]:
        """``(p, W)`` as passed to the compiled kernels."""
        return (np.array(self.parameter_vector), np.ascontiguousarray(self.weights, dtype=float))

    @functools.cached_property
    def spectrum(self):
        """Spectrum of the mode operator (:class:`bifnet.connectome.Spectrum`): mode ``k`` (1-based) is
        column ``k - 1``; ``P`` for additive coupling, ``L`` for diffusive coupling."""
        from bifnet.connectome import matrix_spectrum

        if self.operator is not None:
            return self.operator.spectrum()
        if self.connectome is not None:
            return self.connectome.spectrum()
        return matrix_spectrum(self.weights)

    def with_parameters(self, **overrides: float) -> "Network":
        """A copy with some parameters changed."""
        merged = self.model.resolve_parameters({**self.parameters, **overrides})
        return dataclasses.replace(self, parameters=MappingProxyType(merged))


def build_network(model: NodeModel, connectome_or_weights, parameters: Mapping[str, float] | None = None,
                  *, normalise: bool = True) -> Network:
    """Build a :class:`Network` from a model, a connectome (or matrix) and parameters.

    Parameters
    ----------
    model : NodeModel
        Node model (``bifnet.model.load_model``).
    connectome_or_weights : Connectome or array_like
        A :class:`~bifnet.connectome.Connectome` (row-normalised here if it is
        not already) or an ``(N, N)`` non-negative matrix.
    parameters : mapping, optional
        Parameter overrides; the rest take the model defaults.
    normalise : bool
        Row-normalise the weights (default). With ``False`` the rows must
        already sum to one.

    Returns
    -------
    Network

    Raises
    ------
    SimulationError
        If the matrix is not square, not finite, has a zero row, or (with
        ``normalise=False``) rows that do not sum to one.
    ModelError
        Unknown parameter names.

    Examples
    --------
    >>> net = build_network(load_model("ngnmm_ping"), np.ones((3, 3)), {"eps": 8})  # doctest: +SKIP
    >>> net.weights.sum(axis=1)                                                     # doctest: +SKIP
    array([1., 1., 1.])
    """
    from bifnet.connectome import Connectome, CouplingOperator, coupling_operator
    from bifnet.errors import ConnectomeError

    coupling = model.require_coupling("a network")
    connectome = None
    operator = None
    labels: tuple[str, ...] = ()
    if isinstance(connectome_or_weights, CouplingOperator):
        if (connectome_or_weights.scheme, connectome_or_weights.laplacian) != (coupling.scheme, coupling.laplacian):
            raise SimulationError(f"connectome_or_weights: a {connectome_or_weights.scheme} operator for a model "
                                  f"with {coupling.scheme} coupling")
        operator = connectome_or_weights
        connectome = operator.connectome
    elif coupling.scheme == "diffusive":
        if hasattr(connectome_or_weights, "weights") and hasattr(connectome_or_weights, "spectrum"):
            connectome = connectome_or_weights
        else:
            W = np.array(connectome_or_weights, dtype=float)
            if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
                raise SimulationError(f"connectome_or_weights: expected a square (N, N) matrix, got shape {W.shape}")
            try:
                connectome = Connectome(weights=W, labels=tuple(str(i) for i in range(W.shape[0])), centres=None,
                                        name="weights", source="array")
            except ConnectomeError as error:
                raise SimulationError(f"connectome_or_weights: {error}") from None
        try:
            operator = coupling_operator(connectome, coupling)
        except ConnectomeError as error:
            raise SimulationError(f"connectome_or_weights: {error}") from None
        connectome = operator.connectome
    if operator is not None:
        W = np.array(operator.matrix, dtype=float)
        labels = tuple(connectome.labels)
    else:
        W, connectome, labels = _additive_weights(connectome_or_weights, normalise)
        if connectome is not None and hasattr(connectome, "_rows_sum_to_one"):
            operator = coupling_operator(connectome, coupling)
    W = np.ascontiguousarray(W)
    W.setflags(write=False)
    if not labels:
        labels = tuple(str(i) for i in range(W.shape[0]))
    params = MappingProxyType(model.resolve_parameters(parameters))
    return Network(model=model, weights=W, parameters=params, labels=labels, connectome=connectome,
                   operator=operator)


def _additive_weights(connectome_or_weights, normalise):
    """The row-normalised matrix of additive coupling, the connectome (or None) and labels."""
    connectome = None
    labels: tuple[str, ...] = ()
    if hasattr(connectome_or_weights, "weights") and hasattr(connectome_or_weights, "spectrum"):
        connectome = connectome_or_weights
        if normalise:
            sums = np.asarray(connectome.weights).sum(axis=1)
            if not np.allclose(sums, 1.0, rtol=0, atol=1e-12):
                connectome = connectome.row_normalised()
        W = np.array(connectome.weights, dtype=float)
        labels = tuple(getattr(connectome, "labels", ()) or ())
    else:
        W = np.array(connectome_or_weights, dtype=float)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
        raise SimulationError(f"connectome_or_weights: expected a square (N, N) matrix, got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise SimulationError("connectome_or_weights: the weights contain NaN or infinity")
    sums = W.sum(axis=1)
    if normalise and connectome is None:
        zero = np.flatnonzero(sums == 0)
        if zero.size:
            raise SimulationError(f"connectome_or_weights: row(s) {zero.tolist()} sum to zero; cannot row-normalise")
        W = W / sums[:, None]
    elif not np.allclose(W.sum(axis=1), 1.0, rtol=0, atol=1e-10):
        raise SimulationError("connectome_or_weights: rows must sum to one (pass normalise=True)")
    return W, connectome, labels


def homogeneous_network(model: NodeModel, parameters: Mapping[str, float] | None = None) -> Network:
    """The self-coupled node as a one-region network (``W = [[1]]``; ``G = 0`` for diffusive coupling).

    Its vector field is the homogeneous system of
    :func:`bifnet.systems.homogeneous_system`; useful for Lyapunov spectra and
    simulations of the synchronous manifold.
    """
    return build_network(model, np.ones((1, 1)), parameters)


# --------------------------------------------------------------------------- #
# Vector field, Jacobian-vector products
# --------------------------------------------------------------------------- #


def _flat_state(network: Network, y, name: str = "y") -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.shape == network.state_shape or y.shape == (network.dimension,):
        return np.ascontiguousarray(y.reshape(network.dimension))
    raise SimulationError(
        f"{name}: expected shape {network.state_shape} or ({network.dimension},), got {y.shape}"
    )


def network_rhs(network: Network, y) -> np.ndarray:
    """Evaluate the compiled network vector field.

    Parameters
    ----------
    network : Network
    y : array_like
        State, ``(N, n)`` or flat ``(N * n,)``.

    Returns
    -------
    numpy.ndarray
        ``dy/dt`` with the shape of ``y``.
    """
    from bifnet.network._kernels import network_kernels

    shape = np.shape(y)
    flat = _flat_state(network, y)
    rhs, _, _ = network_kernels(network.model)
    out = np.empty_like(flat)
    rhs(flat, network.kernel_args, out)
    return out.reshape(shape)


def network_jvp(network: Network, y, V) -> np.ndarray:
    """Structured Jacobian–matrix product ``D F(y) V`` of the network.

    Parameters
    ----------
    network : Network
    y : array_like
        State, ``(N, n)`` or flat.
    V : array_like
        ``(N * n,)`` or ``(N * n, k)`` tangent vector(s).

    Returns
    -------
    numpy.ndarray
        ``D F(y) V`` with the shape of ``V``.

    Notes
    -----
    ``(D F V)_i = D_x f(x_i, C_i) V_i + sum_k (df/dC_k)(x_i, C_i) s_k sum_j G_ij (D_x c_k) V_j``:
    block-diagonal node Jacobians plus one rank-one coupling per channel and
    node, computed with one ``G @ V_c`` product per channel. No ``Nn x Nn`` matrix is formed.
    """
    from bifnet.network._kernels import network_kernels

    flat = _flat_state(network, y)
    V = np.asarray(V, dtype=float)
    vector = V.ndim == 1
    Vm = np.ascontiguousarray(V.reshape(network.dimension, -1))
    if Vm.shape[0] != network.dimension:
        raise SimulationError(f"V: expected {network.dimension} rows, got {V.shape}")
    _, tangent, _ = network_kernels(network.model)
    dy = np.empty_like(flat)
    dV = np.empty_like(Vm)
    tangent(flat, Vm, network.kernel_args, dy, dV)
    return dV[:, 0] if vector else dV


def network_jacobian_dense(network: Network, y) -> np.ndarray:
    """The full ``(N n) x (N n)`` network Jacobian (for tests and small networks).

    ``blockdiag(D_x f_i) + sum_k [s_k (df/dC_k)_i G_ij e_{c_k}^T]_{ij}``.
    """
    from bifnet.network._kernels import network_kernels

    flat = _flat_state(network, y)
    N, n = network.state_shape
    m = len(network.model.channels)
    _, _, node_jacobians = network_kernels(network.model)
    Js = np.empty((N, n, n))
    gs = np.empty((N, n, m))
    p, W = network.kernel_args
    node_jacobians(flat, p, W, Js, gs)
    strengths = network.model.strengths(network.parameters)
    J = np.zeros((N * n, N * n))
    for i in range(N):
        J[i * n:(i + 1) * n, i * n:(i + 1) * n] = Js[i]
    # coupling: row block i, column (j, c_k) gets s_k G_ij g_i,k
    for k, ci in enumerate(network.model.coupled_indices):
        for i in range(N):
            J[i * n:(i + 1) * n, ci::n] += strengths[k] * np.outer(gs[i, :, k], W[i])
    return J


# --------------------------------------------------------------------------- #
# Initial states
# --------------------------------------------------------------------------- #


def as_generator(rng) -> np.random.Generator:
    """``rng`` as a :class:`numpy.random.Generator` (``int``/``None`` seed it)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise SimulationError(f"rng: expected a numpy Generator, an int seed or None, got {type(rng).__name__}")


def check_rates(network_or_model, y, what: str = "y0") -> None:
    """Refuse states with a negative firing rate (variables named ``r_*``).

    Raises
    ------
    SimulationError
        Naming the first offending region and variable.
    """
    model = getattr(network_or_model, "model", network_or_model)
    names = model.variable_names
    y = np.asarray(y, dtype=float).reshape(-1, len(names))
    for k, name in enumerate(names):
        if name.startswith("r_"):
            bad = np.flatnonzero(y[:, k] < 0)
            if bad.size:
                i = int(bad[0])
                raise SimulationError(
                    f"{what}: firing rate {name} is negative ({y[i, k]:.3g}) at region {i}"
                    f" ({bad.size} region(s) in all); rates must be >= 0 — use a smaller amplitude"
                )
    if not np.all(np.isfinite(y)):
        raise SimulationError(f"{what}: contains NaN or infinity")


def mode_vector(network: Network, mode: int) -> np.ndarray:
    """Real part of the connectome eigenvector of ``mode`` (1-based), unit max-norm."""
    N = network.n_regions
    if not isinstance(mode, (int, np.integer)) or not 1 <= mode <= N:
        raise SimulationError(f"mode: expected an integer in 1..{N}, got {mode!r}")
    phi = np.real(network.spectrum.eigenvectors[:, mode - 1])
    return phi / np.max(np.abs(phi))


def homogeneous_initial_state(network: Network, x_hom, perturbation: str = "random", amplitude: float = 1e-4,
                              *, mode: int = 2, direction=None, rng=None) -> np.ndarray:
    """A homogeneous state ``x_hom`` in every region, plus a small perturbation.

    Parameters
    ----------
    network : Network
    x_hom : array_like
        Node state ``(n,)`` copied into every region.
    perturbation : {"random", "mode", "none"}
        ``"random"``: independent normal deviates times ``amplitude``;
        ``"mode"``: ``amplitude * Re(phi_mode)_i * direction`` with ``phi``
        the connectome eigenvector scaled to unit maximum.
    amplitude : float
        Size of the perturbation (state units).
    mode : int
        1-based mode number for ``perturbation="mode"`` (1 = uniform).
    direction : array_like, optional
        ``(n,)`` direction in variable space; default: all ones.
    rng : numpy.random.Generator or int or None
        Randomness for ``"random"``.

    Returns
    -------
    numpy.ndarray
        ``(N, n)`` initial state.

    Raises
    ------
    SimulationError
        Bad arguments, or a firing rate made negative.
    """
    N, n = network.state_shape
    x_hom = np.asarray(x_hom, dtype=float)
    if x_hom.shape != (n,):
        raise SimulationError(f"x_hom: expected shape ({n},), got {x_hom.shape}")
    if not np.isfinite(amplitude) or amplitude < 0:
        raise SimulationError(f"amplitude: expected a finite number >= 0, got {amplitude!r}")
    d = np.ones(n) if direction is None else np.asarray(direction, dtype=float)
    if d.shape != (n,):
        raise SimulationError(f"direction: expected shape ({n},), got {d.shape}")
    y = np.tile(x_hom, (N, 1))
    if perturbation == "random":
        y = y + amplitude * as_generator(rng).standard_normal((N, n)) * d
    elif perturbation == "mode":
        y = y + amplitude * np.outer(mode_vector(network, mode), d)
    elif perturbation != "none":
        raise SimulationError(f"perturbation: expected 'random', 'mode' or 'none', got {perturbation!r}")
    check_rates(network, y, "initial state")
    return y


def find_homogeneous_equilibrium(model: NodeModel, parameters: Mapping[str, float] | None = None, x0=None,
                                 *, settle_time: float = 500.0, dt: float = 0.01, tol: float = 1e-12) -> np.ndarray:
    """A homogeneous equilibrium ``f(x, eps c(x)) = 0`` of the self-coupled node.

    Parameters
    ----------
    model : NodeModel
    parameters : mapping, optional
        Parameter overrides.
    x0 : array_like, optional
        Starting guess; default: the model's initial state integrated for
        ``settle_time`` ms on the homogeneous system (RK4, step ``dt``).
    settle_time, dt : float
        Transient used to approach an attracting equilibrium (0 skips it).
    tol : float
        Required residual (max norm).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` equilibrium.

    Raises
    ------
    SimulationError
        If Newton's method (:func:`bifnet.continuation.equilibria.find_equilibrium`)
        does not converge, or ends at a negative firing rate.
    """
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.errors import ContinuationError

    params = model.resolve_parameters(parameters)
    x = model.default_state() if x0 is None else np.asarray(x0, dtype=float).copy()
    if settle_time > 0:
        from bifnet.network.integrate import simulate

        res = simulate(homogeneous_network(model, params), (0.0, settle_time), x[None, :], dt=dt,
                       stride=max(1, int(round(settle_time / dt))))
        if res.success:
            x = res.y[-1, 0]
    try:
        sol = find_equilibrium(model, params, x, settle_time=0.0, tolerance=tol)
    except ContinuationError as error:
        raise SimulationError(str(error)) from None
    check_rates(model, sol[None, :], "equilibrium")
    return sol
