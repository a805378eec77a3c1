"""Tests of bifnet.connectome: loaders, checks, normalisation and spectra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bifnet.connectome import (
    BUILTIN_NAMES,
    DEFAULT_CONNECTOME,
    Connectome,
    describe_connectome,
    load_connectome,
)
from bifnet.errors import ConnectomeError

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tvb68():
    return load_connectome("tvb68")


@pytest.fixture(scope="module")
def tvb96():
    return load_connectome("tvb96")


@pytest.fixture
def matrix():
    rng = np.random.default_rng(1234)
    weights = rng.random((5, 5))
    weights[weights < 0.3] = 0.0
    weights[np.arange(5), (np.arange(5) + 1) % 5] = 0.5  # no zero rows
    return weights


# --------------------------------------------------------------------------- #
# built-in data
# --------------------------------------------------------------------------- #


def test_builtin_names_and_default():
    assert DEFAULT_CONNECTOME in BUILTIN_NAMES
    sizes = {name: load_connectome(name, allow_zero_rows=True).n_regions for name in BUILTIN_NAMES}
    assert sizes == {"tvb66": 66, "tvb68": 68, "tvb76": 76, "tvb96": 96, "tvb192": 192}


def test_tvb68_as_loaded(tvb68):
    assert tvb68.n_regions == 68
    assert tvb68.is_symmetric
    assert tvb68.self_loop_count == 68  # tvb68 has a nonzero diagonal, kept by default
    assert tvb68.zero_rows == ()
    assert tvb68.transformations == ()
    assert tvb68.centres.shape == (68, 3)
    assert tvb68.labels[0] == "r_lateralorbitofrontal"
    assert len(set(tvb68.labels)) == 68
    assert not tvb68.weights.flags.writeable
    with pytest.raises(ValueError):
        tvb68.weights[0, 0] = 1.0


def test_tvb76_zero_rows_are_rcc_and_lcc():
    conn = load_connectome("tvb76", allow_zero_rows=True)
    assert conn.zero_rows == (37, 75)
    assert (conn.labels[37], conn.labels[75]) == ("rCC", "lCC")
    with pytest.raises(ConnectomeError, match=r"37 \(rCC\), 75 \(lCC\)"):
        load_connectome("tvb76")
    with pytest.raises(ConnectomeError, match="rCC"):
        conn.row_normalised()
    dropped = load_connectome("tvb76", drop_zero_rows=True)
    assert dropped.n_regions == 74
    assert "rCC" not in dropped.labels and "lCC" not in dropped.labels
    assert dropped.transformations == ("dropped all-zero rows [37 'rCC', 75 'lCC']",)
    np.testing.assert_array_equal(
        dropped.weights, np.delete(np.delete(conn.weights, [37, 75], 0), [37, 75], 1)
    )


def test_drop_regions_by_label_and_index():
    by_label = load_connectome("tvb76", drop_regions=["rCC", "lCC"])
    by_index = load_connectome("tvb76", drop_regions=[75, 37])
    assert by_label.sha256() == by_index.sha256()
    assert by_label.transformations == ("dropped regions [37 'rCC', 75 'lCC']",)
    assert by_label.centres.shape == (74, 3)
    with pytest.raises(ConnectomeError, match="no such label"):
        load_connectome("tvb68", drop_regions=["nowhere"])
    with pytest.raises(ConnectomeError, match="0..67"):
        load_connectome("tvb68", drop_regions=[68])


def test_self_loops_kept_by_default_and_dropped_on_request(tvb68):
    dropped = load_connectome("tvb68", drop_self_loops=True)
    assert dropped.self_loop_count == 0
    assert dropped.transformations == ("dropped self-loops (68 diagonal entries set to 0)",)
    off = ~np.eye(68, dtype=bool)
    np.testing.assert_array_equal(dropped.weights[off], tvb68.weights[off])
    assert dropped.sha256() != tvb68.sha256()


# --------------------------------------------------------------------------- #
# normalisation and spectra
# --------------------------------------------------------------------------- #


def test_row_normalised_rows_sum_to_one(tvb68, tvb96):
    for conn in (tvb68, tvb96):
        normalised = conn.row_normalised()
        np.testing.assert_allclose(normalised.weights.sum(axis=1), 1.0, rtol=0, atol=1e-14)
        np.testing.assert_allclose(
            normalised.weights * conn.weights.sum(axis=1)[:, None], conn.weights, rtol=1e-14,
            atol=0,
        )
        assert normalised.transformations[-1] == "row-normalised (each row divided by its sum)"
        again = normalised.row_normalised()
        assert again.transformations[-1] == "row-normalised (rows already summed to 1)"
        np.testing.assert_allclose(again.weights, normalised.weights, rtol=1e-14, atol=0)


def test_tvb68_symmetric_transform_matches_eig(tvb68):
    normalised = tvb68.row_normalised()
    assert not normalised.is_symmetric
    spectrum = normalised.spectrum()
    assert spectrum.is_real
    assert spectrum.eigenvalues.dtype == np.float64
    reference = np.linalg.eig(normalised.weights)[0]
    assert np.max(np.abs(reference.imag)) < 1e-10
    np.testing.assert_allclose(
        spectrum.eigenvalues, np.sort(reference.real)[::-1], rtol=0, atol=1e-10
    )
    assert abs(spectrum.eigenvalues[0] - 1.0) < 1e-12
    v1 = spectrum.eigenvectors[:, 0]
    np.testing.assert_allclose(v1, np.full(68, 1 / np.sqrt(68)), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(spectrum.modes(), np.arange(1, 69))
    assert np.all(np.diff(spectrum.eigenvalues) <= 0)
    assert normalised.spectrum() is spectrum  # cached


@pytest.mark.parametrize("name", ["tvb68", "tvb96"])
def test_eigenpairs_satisfy_p_v_equals_lambda_v(name, tvb68, tvb96):
    conn = {"tvb68": tvb68, "tvb96": tvb96}[name]
    normalised = conn.row_normalised()
    spectrum = normalised.spectrum()
    values, vectors = spectrum.eigenvalues, spectrum.eigenvectors
    residual = normalised.weights @ vectors - vectors * values[None, :]
    assert np.max(np.abs(residual)) < 1e-10
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=0), 1.0, rtol=0, atol=1e-12)
    assert abs(values[0] - 1.0) < 1e-12
    assert np.all(np.diff(values.real) <= 1e-15)


def test_tvb96_spectrum_is_complex(tvb96):
    assert not tvb96.is_symmetric
    spectrum = tvb96.row_normalised().spectrum()
    assert not spectrum.is_real
    assert spectrum.eigenvalues.dtype == np.complex128
    assert np.max(np.abs(spectrum.eigenvalues.imag)) > 1e-6
    # eigenvalues of a real matrix come in conjugate pairs
    values = spectrum.eigenvalues
    np.testing.assert_allclose(np.sort_complex(values), np.sort_complex(values.conj()), atol=1e-12)


def test_symmetric_weights_use_eigh():
    rng = np.random.default_rng(0)
    a = rng.random((6, 6))
    conn = Connectome(weights=a + a.T, labels=tuple("abcdef"), centres=None, name="s", source="s")
    spectrum = conn.spectrum()
    assert spectrum.is_real
    np.testing.assert_allclose(
        spectrum.eigenvalues, np.sort(np.linalg.eigvalsh(a + a.T))[::-1], rtol=0, atol=1e-12
    )


def test_manifest_is_json_serialisable(tvb68):
    manifest = json.loads(json.dumps(tvb68.to_manifest()))
    assert manifest["n_regions"] == 68
    assert manifest["symmetric"] is True
    assert manifest["self_loops"] == 68
    assert manifest["sha256"] == tvb68.sha256()
    assert manifest["spectrum"]["re_max"] == pytest.approx(1.0, abs=1e-12)
    assert manifest["spectrum"]["re_min"] == pytest.approx(-0.7305180753, abs=1e-8)
    zero = load_connectome("tvb76", allow_zero_rows=True).to_manifest()
    assert zero["spectrum"] is None and zero["zero_rows"] == [37, 75]


# --------------------------------------------------------------------------- #
# file formats round-trip
# --------------------------------------------------------------------------- #


def _assert_same(conn, weights, labels=None):
    np.testing.assert_array_equal(conn.weights, weights)
    assert conn.weights.dtype == np.float64
    if labels is not None:
        assert conn.labels == tuple(labels)
    else:
        assert conn.labels == tuple(str(i) for i in range(weights.shape[0]))


def test_npy(tmp_path, matrix):
    np.save(tmp_path / "w.npy", matrix)
    conn = load_connectome(tmp_path / "w.npy")
    _assert_same(conn, matrix)
    assert conn.name == "w"
    assert conn.source == str((tmp_path / "w.npy").resolve())


def test_npz_single_and_key(tmp_path, matrix):
    np.savez(tmp_path / "one.npz", matrix)
    _assert_same(load_connectome(tmp_path / "one.npz"), matrix)
    np.savez(tmp_path / "two.npz", SC=matrix, lengths=2 * matrix)
    _assert_same(load_connectome(tmp_path / "two.npz", key="SC"), matrix)
    with pytest.raises(ConnectomeError, match="SC.*lengths|lengths.*SC"):
        load_connectome(tmp_path / "two.npz")
    with pytest.raises(ConnectomeError, match="no array 'x'"):
        load_connectome(tmp_path / "two.npz", key="x")


@pytest.mark.parametrize("delimiter", [",", ";", " ", "\t"])
def test_dense_text(tmp_path, matrix, delimiter):
    path = tmp_path / "w.csv"
    np.savetxt(path, matrix, delimiter=delimiter, fmt="%.17g")
    _assert_same(load_connectome(path), matrix)


def test_dense_text_with_header_labels(tmp_path, matrix):
    labels = ["A", "B", "C", "D", "E"]
    rows = [",".join(labels)] + [",".join(f"{x:.17g}" for x in row) for row in matrix]
    (tmp_path / "h.csv").write_text("\n".join(rows) + "\n")
    _assert_same(load_connectome(tmp_path / "h.csv"), matrix, labels)
    # header row with a corner cell plus a label column
    rows = ["," + ",".join(labels)] + [
        label + "," + ",".join(f"{x:.17g}" for x in row) for label, row in zip(labels, matrix)
    ]
    (tmp_path / "hc.csv").write_text("\n".join(rows) + "\n")
    _assert_same(load_connectome(tmp_path / "hc.csv"), matrix, labels)


def test_txt_dense(tmp_path, matrix):
    np.savetxt(tmp_path / "w.txt", matrix, fmt="%.17g")
    _assert_same(load_connectome(tmp_path / "w.txt"), matrix)


def test_edge_lists(tmp_path, matrix):
    edges = [f"{i} {j} {matrix[i, j]:.17g}" for i, j in zip(*np.nonzero(matrix))]
    (tmp_path / "w.txt").write_text("5\n" + "\n".join(edges) + "\n")
    _assert_same(load_connectome(tmp_path / "w.txt"), matrix)
    (tmp_path / "w.edges").write_text("\n".join(edges) + "\n")
    _assert_same(load_connectome(tmp_path / "w.edges"), matrix)
    (tmp_path / "dup.edges").write_text("0 1 1.0\n1 0 2.0\n0 1 3.0\n")
    with pytest.raises(ConnectomeError, match="line 3: edge 0 1 repeats line 1"):
        load_connectome(tmp_path / "dup.edges")
    (tmp_path / "bad.txt").write_text("3\n0 1 1.0\n0 7 1.0\n")
    with pytest.raises(ConnectomeError, match="out of range"):
        load_connectome(tmp_path / "bad.txt")


def test_mat(tmp_path, matrix):
    import scipy.io

    scipy.io.savemat(tmp_path / "one.mat", {"SC": matrix, "name": "x"})
    _assert_same(load_connectome(tmp_path / "one.mat"), matrix)
    scipy.io.savemat(tmp_path / "two.mat", {"W": matrix, "L": 2 * matrix})
    _assert_same(load_connectome(tmp_path / "two.mat", key="W"), matrix)
    _assert_same(load_connectome(tmp_path / "two.mat"), matrix)  # common name "W"
    scipy.io.savemat(tmp_path / "three.mat", {"A": matrix, "B": matrix})
    with pytest.raises(ConnectomeError, match="key"):
        load_connectome(tmp_path / "three.mat")


def _tvb_files(matrix, labels):
    weights = "\n".join(" ".join(f"{x:.17g}" for x in row) for row in matrix) + "\n"
    centres = "\n".join(f"{label} {i}.5 {2 * i} {-i}" for i, label in enumerate(labels)) + "\n"
    return weights, centres


def test_tvb_zip_and_directory(tmp_path, matrix):
    labels = ["lA", "lB", "rA", "rB", "X"]
    weights, centres = _tvb_files(matrix, labels)
    with zipfile.ZipFile(tmp_path / "conn.zip", "w") as archive:
        archive.writestr("conn/weights.txt", weights)
        archive.writestr("conn/centres.txt", centres)
        archive.writestr("conn/tract_lengths.txt", weights)
    folder = tmp_path / "conn_dir"
    folder.mkdir()
    (folder / "weights.txt").write_text(weights)
    (folder / "centres.txt").write_text(centres)
    expected_centres = np.array([[i + 0.5, 2 * i, -i] for i in range(5)])
    for source in (tmp_path / "conn.zip", folder):
        conn = load_connectome(source)
        _assert_same(conn, matrix, labels)
        np.testing.assert_array_equal(conn.centres, expected_centres)
    assert load_connectome(folder).name == "conn_dir"


# --------------------------------------------------------------------------- #
# bad inputs
# --------------------------------------------------------------------------- #


def test_missing_file_and_unknown_sources(tmp_path):
    with pytest.raises(ConnectomeError, match="connectome file not found: .*nothing.npy"):
        load_connectome(tmp_path / "nothing.npy")
    with pytest.raises(ConnectomeError, match="unknown built-in connectome 'tvb67'.*tvb68"):
        load_connectome("tvb67")
    (tmp_path / "w.xyz").write_text("1 2\n3 4\n")
    with pytest.raises(ConnectomeError, match=r"unsupported.*\.xyz.*\.npy"):
        load_connectome(tmp_path / "w.xyz")


def test_non_square(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((3, 4)))
    with pytest.raises(ConnectomeError, match=r"not square: shape \(3, 4\)"):
        load_connectome(tmp_path / "w.npy")
    np.save(tmp_path / "v.npy", np.ones(4))
    with pytest.raises(ConnectomeError, match="not a 2-D matrix"):
        load_connectome(tmp_path / "v.npy")


def test_ragged_csv(tmp_path):
    (tmp_path / "w.csv").write_text("1,2,3\n4,5\n6,7,8\n")
    with pytest.raises(ConnectomeError, match="ragged.*line 2 has 2 values"):
        load_connectome(tmp_path / "w.csv")
    (tmp_path / "x.csv").write_text("1,2\n4,abc\n")
    with pytest.raises(ConnectomeError, match="line 2, column 2: 'abc' is not a number"):
        load_connectome(tmp_path / "x.csv")


@pytest.mark.parametrize(
    "value, words", [(np.nan, r"1 NaN, 0 inf"), (np.inf, r"0 NaN, 1 inf")]
)
def test_non_finite(tmp_path, matrix, value, words):
    matrix[2, 3] = value
    np.save(tmp_path / "w.npy", matrix)
    with pytest.raises(ConnectomeError, match=words + r".*row 2, column 3"):
        load_connectome(tmp_path / "w.npy")


def test_negative(tmp_path, matrix):
    matrix[1, 4] = -0.25
    matrix[3, 0] = -1.0
    np.save(tmp_path / "w.npy", matrix)
    with pytest.raises(ConnectomeError, match=r"2 negative weights; first at row 1, column 4"):
        load_connectome(tmp_path / "w.npy")


def test_zero_rows_in_a_file(tmp_path, matrix):
    matrix[2] = 0.0
    np.save(tmp_path / "w.npy", matrix)
    with pytest.raises(ConnectomeError, match=r"1 all-zero row: 2 \(2\)"):
        load_connectome(tmp_path / "w.npy")
    assert load_connectome(tmp_path / "w.npy", allow_zero_rows=True).zero_rows == (2,)
    assert load_connectome(tmp_path / "w.npy", drop_zero_rows=True).n_regions == 4


def test_builtin_without_tvb_data(monkeypatch):
    import importlib.resources

    def missing(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(ConnectomeError, match="needs the package tvb-data: pip install tvb-data"):
        load_connectome("tvb68")


# --------------------------------------------------------------------------- #
# describe_connectome and the CLI
# --------------------------------------------------------------------------- #


def test_describe_connectome():
    text = describe_connectome("tvb68")
    assert "regions: 68" in text
    assert "symmetric: yes" in text
    assert "self-loops: 68" in text
    assert "zero-sum rows: none" in text
    assert "spectrum of P = D^-1 W (additive coupling): real" in text
    assert "spectrum of L = D - W (diffusive coupling): real" in text
    assert "complex" in describe_connectome("tvb96")
    # zero rows are described (diffusive coupling allows them), with the options that drop them
    text = describe_connectome("tvb76")
    assert "37 (rCC), 75 (lCC)" in text and "--drop-zero-rows" in text
    assert "P = D^-1 W (additive coupling): not defined" in text
    assert "regions: 74" in describe_connectome("tvb76", drop_zero_rows=True)


def _cli(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "bifnet.cli", "connectome", "info", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


def test_cli_accepts_the_options_it_suggests():
    result = _cli("tvb76")
    assert result.returncode == 0 and "rCC" in result.stdout and "--drop-zero-rows" in result.stdout
    result = _cli("tvb76", "--drop-zero-rows", "--symmetrize", "--drop-self-loops")
    assert result.returncode == 0, result.stderr
    assert "regions: 74" in result.stdout and "symmetric: yes" in result.stdout and "self-loops: 0" in result.stdout
    assert "Traceback" not in result.stderr


def test_edge_lists_symmetrize_and_hints(tmp_path):
    upper = tmp_path / "upper.edges"
    upper.write_text("4\n0 1 1.0\n0 2 2.0\n1 3 1.5\n2 3 1\n")
    with pytest.raises(ConnectomeError, match="upper-triangular.*symmetrize"):
        load_connectome(upper)
    for how, expected in (("max", 2.0), ("mean", 1.0), ("sum", 2.0), (True, 2.0)):
        W = load_connectome(upper, symmetrize=how).weights
        assert np.array_equal(W, W.T) and W[2, 0] == expected
    one_based = tmp_path / "one.edges"
    one_based.write_text("1 2\n2 3\n3 1\n")
    with pytest.raises(ConnectomeError, match="1-based"):
        load_connectome(one_based)
    conn = load_connectome("tvb68")
    relabelled = Connectome(weights=conn.weights, labels=tuple(f"r{i}" for i in range(68)), centres=None,
                            name="x", source="x")
    assert relabelled.weights_sha256() == conn.weights_sha256()
    assert relabelled.labels_sha256() != conn.labels_sha256() and relabelled.sha256() != conn.sha256()
    manifest = conn.to_manifest()
    assert manifest["sha256_weights"] == conn.weights_sha256()


def test_cli_describes_tvb68():
    result = _cli("tvb68")
    assert result.returncode == 0, result.stderr
    assert "68" in result.stdout
