"""Figures and the numbers they show: spectra peaks and axis, count colours, label placement."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402


def _harmonic_network(f_hz=115.0, regions=12, dt=0.1, t_max=4000.0):
    """Regions oscillate at f with phases spread evenly round the circle, plus a
    small in-phase component at 2f: the mean signal keeps only the 2f part."""
    from bifnet.analysis.spectral import power_spectrum

    t = np.arange(0.0, t_max, dt)  # ms
    phases = 2 * np.pi * np.arange(regions) / regions
    x = np.sin(2 * np.pi * f_hz / 1000.0 * t[:, None] + phases) + 0.3 * np.sin(2 * np.pi * 2 * f_hz / 1000.0 * t)[:, None]
    f, p_regions = power_spectrum(x, dt)
    _, p_mean = power_spectrum(x.mean(axis=1), dt)
    frame = pd.DataFrame({"frequency_hz": f, "mean_power": p_mean, "region_mean_power": p_regions.mean(axis=1),
                          **{f"power_{r}": p_regions[:, r] for r in range(regions)}})
    return frame


def test_network_mean_at_the_harmonic_regions_at_the_fundamental():
    from bifnet.analysis.spectral import plot_power_spectrum, spectrum_axis_limit, spectrum_peaks

    peaks = spectrum_peaks(_harmonic_network())
    assert peaks["network_mean_hz"] == pytest.approx(230.0, abs=1.0)
    assert peaks["region_mean_hz"] == pytest.approx(115.0, abs=1.0)
    assert peaks["regional_median_hz"] == pytest.approx(115.0, abs=1.0)
    np.testing.assert_allclose(peaks["regions_hz"], 115.0, atol=1.0)
    # the axis reaches past the reported peak (the default 200 Hz would hide it)
    limit = spectrum_axis_limit([peaks["network_mean_hz"], peaks["region_mean_hz"]])
    assert limit >= peaks["network_mean_hz"] * 1.2 and limit == 300.0
    assert spectrum_axis_limit([115.0]) == 200.0
    frame = _harmonic_network()
    ax = plot_power_spectrum(frame["frequency_hz"], frame["mean_power"], peak=peaks["network_mean_hz"])
    plot_power_spectrum(frame["frequency_hz"], frame["region_mean_power"], ax=ax, peak=peaks["region_mean_hz"])
    assert ax.get_xlim()[1] >= peaks["network_mean_hz"]
    plt.close(ax.figure)


def test_count_scale_bins_and_colours():
    from bifnet.plots import level_edges, unstable_count_scale

    cmap, norm, labels = unstable_count_scale(89)
    assert labels == ["0", "1", "2", "3", "4–5", "6–10", "11–20", "21–50", "51–89"]
    colour = lambda n: cmap(norm(n))  # noqa: E731
    assert colour(0) != colour(1)
    assert len({colour(n) for n in (0, 1, 2, 3, 4, 6, 11, 21, 51)}) == 9
    assert colour(4) == colour(5) and colour(51) == colour(89) and colour(3) != colour(4)
    assert colour(-1) == tuple(cmap.get_under()) != colour(0)  # no stable homogeneous state: grey
    assert unstable_count_scale(3)[2] == ["0", "1", "2", "3"]
    assert unstable_count_scale(7)[2] == ["0", "1", "2", "3", "4–5", "6–7"]
    np.testing.assert_allclose(level_edges([8.0, 20.0], (0.0, 30.0)), [0.0, 14.0, 30.0])
    np.testing.assert_allclose(level_edges([1.0, 2.0, 4.0]), [0.5, 1.5, 3.0, 5.0])


def test_map_rows_touch_and_zero_is_coloured():
    from bifnet.plots import plot_unstable_counts

    fig, ax = plt.subplots()
    counts = np.array([[0, 1, 4, -1], [2, 3, 60, 0]])
    plot_unstable_counts(np.linspace(0, 3, 4), [8.0, 20.0], counts, ax, bounds=(0.0, 30.0), max_count=89)
    mesh = ax.collections[0]
    coords = mesh.get_coordinates()
    np.testing.assert_allclose(coords[:, 0, 1], [0.0, 14.0, 30.0])  # row edges: bounds and the midpoint
    faces = mesh.to_rgba(np.ravel(mesh.get_array()))
    assert len({tuple(np.round(c, 6)) for c in faces}) == 7  # 0, 1, 4, grey, 2, 3, 60: all different
    plt.close(fig)


def test_labels_do_not_overlap():
    from bifnet.plots import place_labels

    fig, ax = plt.subplots()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    points = [(0.5, 0.5)] * 6 + [(0.505, 0.5), (0.51, 0.51), (0.9, 0.9), (0.2, 0.3)]
    placed = place_labels(ax, points, [f"LPC{i}" for i in range(len(points))])
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in placed if a is not None]
    assert len(boxes) >= 6 and placed[-1] is not None and placed[-2] is not None
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    assert sum(a is None for a in placed) == len(points) - len(boxes)  # the rest dropped, not overlapped
    plt.close(fig)
