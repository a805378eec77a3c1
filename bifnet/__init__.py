"""bifnet: continuation and bifurcation analysis of large-scale brain-network models.

Heavy modules (AUTO adapter, numba, matplotlib, xarray) are imported where
used so that ``import bifnet`` stays fast.
"""

from bifnet.errors import (
    BifnetError,
    ConnectomeError,
    ContinuationError,
    ModelError,
    RunFileError,
    SimulationError,
)

__version__ = "0.1.0"

__all__ = [
    "BifnetError",
    "ConnectomeError",
    "ContinuationError",
    "ModelError",
    "RunFileError",
    "SimulationError",
    "__version__",
]
