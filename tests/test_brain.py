"""Brain views draw each region at its centre with its value."""

import numpy as np
import pytest

from bifnet.connectome import load_connectome
from bifnet.errors import SimulationError
from bifnet.network.plots import plot_brain, plot_brain_views


def test_regions_are_drawn_at_their_centres_with_their_values():
    import matplotlib.pyplot as plt

    connectome = load_connectome("tvb68")
    values = connectome.row_normalised().spectrum().eigenvectors[:, -1]
    ax = plot_brain(values, connectome.centres, view="sagittal")
    scatter = ax.collections[0]
    drawn = np.asarray(scatter.get_offsets())
    colours = np.asarray(scatter.get_array())
    # the same (position, value) pairs, whatever the drawing order
    expected = sorted(zip(connectome.centres[:, 1], connectome.centres[:, 2], values))
    got = sorted(zip(drawn[:, 0], drawn[:, 1], colours))
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=1e-12)
    assert scatter.get_clim() == pytest.approx((-np.abs(values).max(), np.abs(values).max()))
    fig = plot_brain_views(values, connectome.centres)
    assert len(fig.axes) == 6  # three views and their colour bars
    plt.close("all")


def test_bad_view_and_shape_are_refused():
    centres = np.zeros((3, 3))
    with pytest.raises(SimulationError, match="view"):
        plot_brain([1, 2, 3], centres, view="top")
    with pytest.raises(SimulationError, match="centres"):
        plot_brain([1, 2], centres)
