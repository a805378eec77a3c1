"""Brain-network simulations: network vector field, integrators, tangent dynamics, outputs.

Public API
----------
build_network, Network, homogeneous_network
network_rhs, network_jvp, network_jacobian_dense
homogeneous_initial_state, mode_vector
simulate, SimulationResult, METHODS
to_xarray, write_simulation (``bifnet.network.output``)
"""

from bifnet.network.core import (
    Network,
    build_network,
    check_rates,
    find_homogeneous_equilibrium,
    homogeneous_initial_state,
    homogeneous_network,
    mode_vector,
    network_jacobian_dense,
    network_jvp,
    network_rhs,
)
from bifnet.network.integrate import METHODS, SimulationResult, simulate
from bifnet.network.output import to_xarray, write_simulation

__all__ = [
    "METHODS",
    "Network",
    "SimulationResult",
    "build_network",
    "check_rates",
    "find_homogeneous_equilibrium",
    "homogeneous_initial_state",
    "homogeneous_network",
    "mode_vector",
    "network_jacobian_dense",
    "network_jvp",
    "network_rhs",
    "simulate",
    "to_xarray",
    "write_simulation",
]
