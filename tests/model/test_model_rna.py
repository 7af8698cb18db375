from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from napari_mupd.errors import ConditionError
from napari_mupd.model import RNAEncoder, expression_features

GENES = ["CD3E", "MKI67", "EPCAM"]


def test_counts_are_scaled_to_log1p_cp10k() -> None:
    counts = {"cd3e": 30, "Mki67": 0, "OTHER": 1970}
    f = expression_features(counts, GENES)
    assert f.report.normalization == ("log1p_cp10k",)
    np.testing.assert_allclose(f.values[0], [np.log1p(30 / 2000 * 1e4), 0.0, 0.0])
    assert f.observed[0].tolist() == [True, True, False]
    assert f.report.found == ("CD3E", "MKI67") and f.report.missing == ("EPCAM",)


def test_log_normalised_values_are_kept() -> None:
    f = expression_features(pd.Series({"CD3E": 1.5, "EPCAM": 0.25}), GENES)
    assert f.report.normalization == ("none",)
    np.testing.assert_allclose(f.values[0], [1.5, 0.0, 0.25])
    x = f.tensor()
    assert x.shape == (1, 6) and x[0, 3:].tolist() == [1.0, 0.0, 1.0]


def test_csv_long_and_wide(tmp_path) -> None:
    long = tmp_path / "long.csv"
    long.write_text("gene,value\nCD3E,2.0\nMKI67,1.0\n")
    wide = tmp_path / "wide.csv"
    wide.write_text("sample,CD3E,MKI67\ns1,2.0,1.0\ns2,0.5,0.0\n")
    a = expression_features(long, GENES)
    b = expression_features(str(wide), GENES)
    assert a.values.shape == (1, 3) and b.values.shape == (2, 3)
    np.testing.assert_allclose(a.values[0], b.values[0])


def test_anndata_rows_are_a_batch() -> None:
    anndata = pytest.importorskip("anndata")
    ad = anndata.AnnData(
        X=np.array([[1.0, 2.0], [3.0, 0.0]], dtype=np.float32),
        var=pd.DataFrame(index=["Cd3e", "Epcam"]),
    )
    f = expression_features(ad, GENES)
    np.testing.assert_allclose(f.values, [[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert f.report.n_samples == 2


def test_gene_sets_score_the_mean_z_of_found_members() -> None:
    values = {"A": 1.0, "B": 3.0, "C": 5.0, "D": 7.0}
    sets = {"up": ["c", "d"], "down": ["A", "missing"], "none": ["X"]}
    f = expression_features(values, [], gene_sets=sets)
    z = (np.array([1.0, 3.0, 5.0, 7.0]) - 4.0) / np.std([1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(f.values[0], [(z[2] + z[3]) / 2, z[0], 0.0])
    assert f.observed[0].tolist() == [True, True, False]
    assert f.report.missing_sets == ("none",)
    assert set(f.report.missing) == {"missing", "X"}


@pytest.mark.parametrize(
    ("rna", "message"),
    [
        ({"CD3E": np.nan, "MKI67": np.nan}, "all NaN"),
        ({"GENE1": 1.0, "GENE2": 2.0}, "none of the 3 genes"),
        ({"CD3E": np.inf}, "infinite"),
        ({"CD3E": "high"}, "must be numbers"),
        (42, "got int"),
        ("no_such_file.csv", "no such file"),
    ],
)
def test_bad_expression_is_a_condition_error(rna: object, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        expression_features(rna, GENES)


def test_real_visium_spots_report_found_and_missing_genes(mouse_brain) -> None:
    anndata = pytest.importorskip("anndata")
    ad = anndata.read_h5ad(mouse_brain)
    f = expression_features(ad[:3], ["SULF1", "eya1", "NOTAGENE", "Map4k4"])
    assert f.report.found == ("SULF1", "eya1", "Map4k4")
    assert f.report.missing == ("NOTAGENE",)
    assert f.report.normalization == ("none",) * 3  # the file is log-normalised already
    assert "3/4 panel genes found; missing: NOTAGENE" in str(f.report)
    expected = ad[:3, "Sulf1"].X.toarray().ravel()
    np.testing.assert_allclose(f.values[:, 0], expected, rtol=1e-6)


def test_encoder_makes_tokens() -> None:
    enc = RNAEncoder(3, 16, num_tokens=4, dim=8)
    f = expression_features({"CD3E": 1.0}, GENES)
    assert enc(f.tensor()).shape == (1, 4, 8)
    assert torch.isfinite(enc(f.tensor())).all()
