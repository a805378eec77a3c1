"""Dispersion relations of homogeneous states: growth rate against the
connectome eigenvalue ``Lambda``.

Equilibria: eigenvalues of ``J(Lambda) = A + Lambda B``. Cycles: Floquet
exponents (:mod:`bifnet.transverse.floquet`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from bifnet.errors import ContinuationError
from bifnet.model import NodeModel


@dataclasses.dataclass(frozen=True)
class DispersionRelation:
    """Growth rate and frequency of each ``Lambda`` at a homogeneous state.

    Attributes
    ----------
    Lambda : ndarray (K,)
        Connectome eigenvalues or a continuous range (real or complex).
    growth_rate : ndarray (K,)
        Largest real part of the eigenvalues of ``J(Lambda)`` (1/ms) or of the
        Floquet exponents (trivial one of ``Lambda = 1`` excluded).
    frequency_hz : ndarray (K,)
        ``|Im| / (2 pi) * 1000`` of that eigenvalue or exponent.
    solution : str
        ``"EP"`` or ``"LC"``.
    eigenvalues : ndarray (K, n) or None
        All eigenvalues (EP, sorted by real part) or Floquet multipliers (LC).
    parameters : mapping
        Parameters of the homogeneous state.
    state : ndarray
        The equilibrium, or a point of the cycle.
    period : float
        Period of the cycle (ms), NaN for equilibria.
    """

    Lambda: np.ndarray
    growth_rate: np.ndarray
    frequency_hz: np.ndarray
    solution: str
    eigenvalues: np.ndarray | None = None
    parameters: Mapping[str, float] = dataclasses.field(default_factory=dict)
    state: np.ndarray | None = None
    period: float = float("nan")

    def unstable(self, tolerance: float = 0.0) -> np.ndarray:
        """Boolean mask of growth rates above ``tolerance``."""
        return self.growth_rate > tolerance

    def to_frame(self, modes=None):
        """One row per ``Lambda``: ``mode, Lambda, Lambda_imag, growth_rate,
        frequency_hz, solution`` (``mode`` omitted when ``modes`` is None)."""
        import pandas as pd

        lam = np.asarray(self.Lambda)
        frame = pd.DataFrame({
            "Lambda": np.real(lam).astype(float), "Lambda_imag": np.imag(lam).astype(float),
            "growth_rate": np.asarray(self.growth_rate, dtype=float),
            "frequency_hz": np.asarray(self.frequency_hz, dtype=float), "solution": self.solution,
        })
        if modes is not None:
            frame.insert(0, "mode", np.asarray(modes, dtype=int))
        return frame


def _pvec(model: NodeModel, parameters: Mapping[str, float]) -> np.ndarray:
    return np.array([float(parameters[n]) for n in model.parameter_names])


def equilibrium_dispersion(model: NodeModel, parameters: Mapping[str, float], state, Lambdas) -> DispersionRelation:
    """Eigenvalues of ``J(Lambda) = A + Lambda B`` for every ``Lambda``.

    Parameters
    ----------
    model : NodeModel
    parameters : mapping
        All model parameters.
    state : array_like
        A homogeneous equilibrium.
    Lambdas : array_like
        Connectome eigenvalues (real or complex).

    Returns
    -------
    DispersionRelation

    Examples
    --------
    >>> rel = equilibrium_dispersion(model, p, x, spectrum.eigenvalues)   # doctest: +SKIP
    >>> rel.growth_rate[0]      # mode 1 (Lambda = 1): the homogeneous growth rate  # doctest: +SKIP
    """
    from bifnet.codegen import mode_jacobian_functions

    A_fn, B_fn = mode_jacobian_functions(model)
    x = np.asarray(state, dtype=float)
    p = _pvec(model, parameters)
    A, B = A_fn(x, p), B_fn(x, p)
    lam = np.asarray(Lambdas)
    complex_case = np.iscomplexobj(lam) and np.any(np.abs(np.imag(lam)) > 0)
    lam = lam.astype(complex) if complex_case else np.real(lam).astype(float)
    stack = A[None, :, :] + lam[:, None, None] * B[None, :, :]
    ev = np.linalg.eigvals(stack)
    order = np.argsort(-ev.real, axis=1)
    ev = np.take_along_axis(ev, order, axis=1)
    lead = ev[:, 0]
    return DispersionRelation(
        Lambda=lam, growth_rate=lead.real.copy(), frequency_hz=np.abs(lead.imag) / (2 * np.pi) * 1000.0,
        solution="EP", eigenvalues=ev, parameters=dict(parameters), state=x,
    )


def cycle_dispersion(model: NodeModel, cycle, Lambdas) -> DispersionRelation:
    """Floquet dispersion of a homogeneous cycle (see :func:`~bifnet.transverse.floquet.floquet_dispersion`)."""
    from bifnet.transverse.floquet import floquet_dispersion

    fd = floquet_dispersion(model, cycle, Lambdas)
    return DispersionRelation(
        Lambda=np.asarray(fd.Lambda), growth_rate=np.asarray(fd.growth_rate),
        frequency_hz=np.asarray(fd.frequency_hz), solution="LC", eigenvalues=fd.multipliers,
        parameters=dict(cycle.parameters), state=np.asarray(cycle.x0), period=float(fd.period),
    )


def settle(model: NodeModel, parameters: Mapping[str, float], x0=None, *, transient: float = 2000.0):
    """Integrate the homogeneous system for ``transient`` ms: ``(at_rest, final state)``.

    ``at_rest`` is True when every variable varies by less than 1e-6 (relative)
    over the last fifth of the run. The integrator is the compiled adaptive
    DOP853 of :mod:`bifnet.transverse.floquet` (cached on disk, rtol 1e-9);
    scipy's LSODA if that fails (e.g. a stiff model exceeding its step limit).
    """
    from bifnet.transverse import floquet

    p = _pvec(model, parameters)
    x = np.asarray(model.default_state() if x0 is None else x0, dtype=float)
    try:
        x_end, hs, ys = floquet._integrate(model, p, x, transient, 1e-9, record=True, max_steps=200_000)
        t = np.concatenate([[0.0], np.cumsum(hs)])
        tail = ys[t >= 0.8 * transient].T
    except ContinuationError:
        from scipy.integrate import solve_ivp

        from bifnet.codegen import jacobian_function, rhs_function
        from bifnet.systems import homogeneous_system

        system = homogeneous_system(model)
        f, J = rhs_function(system), jacobian_function(system)
        sol = solve_ivp(lambda t, y: f(y, p), (0.0, transient), x, method="LSODA",
                        jac=lambda t, y: J(y, p), rtol=1e-9, atol=1e-12, dense_output=True)
        if not sol.success:
            raise ContinuationError(f"integration of the homogeneous system failed: {sol.message}")
        tail = sol.sol(np.linspace(0.8 * transient, transient, 400))
        x_end = sol.y[:, -1]
    spread = np.max(np.ptp(tail, axis=1) / np.maximum(1.0, np.abs(tail).max(axis=1)))
    return bool(spread < 1e-6), np.asarray(x_end)


def homogeneous_attractor(model: NodeModel, parameters: Mapping[str, float], x0=None, *,
                          transient: float = 2000.0):
    """The homogeneous state reached from ``x0``: ``("EP", x)`` or ``("LC", HomogeneousCycle)``.

    Integrates the homogeneous system for ``transient`` ms (:func:`settle`); if it
    settles the equilibrium is polished by Newton, otherwise the cycle is found
    by shooting. With bistability the answer depends on ``x0``.
    """
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.transverse.floquet import find_cycle

    at_rest, x = settle(model, parameters, x0, transient=transient)
    if at_rest:
        return "EP", find_equilibrium(model, parameters, x, settle_time=0.0)
    return "LC", find_cycle(model, parameters, x, transient=200.0)


def dispersion_at(model: NodeModel, parameters: Mapping[str, float], Lambdas, *, x0=None,
                  solution: str = "auto") -> DispersionRelation:
    """Dispersion relation of the homogeneous state at ``parameters``.

    ``solution = "auto"`` takes the attractor reached from ``x0``
    (:func:`homogeneous_attractor`); ``"EP"`` forces an equilibrium (Newton
    from ``x0``, even an unstable one); ``"LC"`` forces a cycle.
    """
    if solution not in ("auto", "EP", "LC"):
        raise ContinuationError(f"solution must be 'auto', 'EP' or 'LC', got {solution!r}")
    if solution == "EP":
        from bifnet.continuation.equilibria import find_equilibrium

        return equilibrium_dispersion(model, parameters, find_equilibrium(model, parameters, x0), Lambdas)
    if solution == "LC":
        from bifnet.transverse.floquet import find_cycle

        return cycle_dispersion(model, find_cycle(model, parameters, x0), Lambdas)
    kind, state = homogeneous_attractor(model, parameters, x0)
    if kind == "EP":
        return equilibrium_dispersion(model, parameters, state, Lambdas)
    return cycle_dispersion(model, state, Lambdas)
