"""DiagnosticImage persistence and figures (no pyplot state leaks)."""

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

from analysis import DiagnosticImage, classification_image, cluster_test, pixel_test
from analysis.figures import plot_diagnostic_image, save_diagnostic_png
from bubbles import BubbleSpec, sample_centers


def test_save_load_round_trip(tmp_path, small_spec, small_centers, rng):
    ci = classification_image(small_spec, small_centers, rng.normal(size=400),
                              keep_raw=True, progress=False)
    npz, js = ci.save(tmp_path / "obs1")
    assert npz.name == "obs1.npz" and js.name == "obs1.json"
    meta = json.loads(js.read_text())
    assert meta["method"] == "regression" and meta["n_trials"] == 400
    assert meta["spec"]["format"] == "bubbles.BubbleSpec"
    with np.load(npz) as data:
        assert set(data.files) == {"z", "raw"}
    back = DiagnosticImage.load(tmp_path / "obs1")
    assert_allclose(back.z, ci.z, atol=0)
    assert back.spec == small_spec and back.info["null"] == "analytic"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ci.save(tmp_path / "obs1")
    ci.save(tmp_path / "obs1", overwrite=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiagnosticImage.load(tmp_path / "missing")


def test_to_png_and_figure_panels(tmp_path, rng):
    import matplotlib.pyplot as plt
    before = plt.get_fignums()
    spec = BubbleSpec(shape=(32, 32), sigma=1.5, n_bubbles=12, bands=3)
    ci = classification_image(spec, sample_centers(spec, 0, 100), rng.normal(size=100),
                              progress=False)
    fig = plot_diagnostic_image(ci, background=np.full((32, 32), 0.5))
    assert len(fig.axes) == 4        # three bands + colour bar
    z = np.zeros((32, 32))
    z[10:20, 10:20] = 5
    pix, clu = pixel_test(z, 2.5), cluster_test(z, 2.5)
    path = save_diagnostic_png(DiagnosticImage(z, "regression", None, 10),
                               tmp_path / "a.png", background=np.full((32, 32), 0.5),
                               pixel=pix, cluster=clu)
    assert path.stat().st_size > 1000
    with pytest.raises(FileExistsError):
        save_diagnostic_png(DiagnosticImage(z, "regression", None, 10), path,
                            overwrite=False)
    with pytest.raises(ValueError, match="background must have the map's shape"):
        plot_diagnostic_image(z, background=np.zeros((4, 4)))
    # a scientist reads the thresholds on the panel and what the contours mean below
    fig = plot_diagnostic_image(z, pixel=pix, cluster=clu)
    assert fig.axes[0].get_title() == (f"pixel z ≥ {pix.threshold:.2f}, cluster ≥ "
                                       f"{clu.min_cluster_size:.0f} px")
    assert [t.get_text() for t in fig.texts] == [
        "solid: pixel test, dashed: cluster test (p = 0.05, family-wise)"]
    assert plot_diagnostic_image(z).texts == []
    # one test per band for a multi-scale image, each panel with its own threshold
    zb = np.stack([z, z, z])
    tests = [pixel_test(zb[b], s) for b, s in enumerate((2.5, 3.0, 4.0))]
    fig = plot_diagnostic_image(ci, pixel=tests)
    assert [a.get_title().split("\n")[1] for a in fig.axes[:3]] == [
        f"pixel z ≥ {t.threshold:.2f}" for t in tests]
    assert fig.axes[2].get_title().startswith("band 3 (sigma 6 px)")
    with pytest.warns(UserWarning, match="spans 1.5 FWHM"):
        coarse = pixel_test(z, 10.0)
    title = plot_diagnostic_image(z, pixel=coarse).axes[0].get_title()
    assert title.endswith("\nRFT conditions not met (see warnings)")
    with pytest.raises(ValueError, match=r"pixel must give one test per band \(3\), got 2"):
        plot_diagnostic_image(ci, pixel=tests[:2])
    assert plt.get_fignums() == before


def test_dims_name_every_axis_and_survive_a_round_trip(tmp_path, small_spec):
    units = DiagnosticImage(np.zeros((3, 32, 32)), "regression", small_spec, 50,
                            dims=("target", "y", "x"), targets=["a", "b", "c"],
                            observer="unit")
    assert units.maps().shape == (3, 1, 32, 32) and units.n_targets == 3
    units.save(tmp_path / "u")
    back = DiagnosticImage.load(tmp_path / "u")
    assert back.dims == ("target", "y", "x") and back.targets == ["a", "b", "c"]
    assert back.observer == "unit"
    multi = BubbleSpec(shape=(32, 32), sigma=1.5, n_bubbles=12, bands=3)
    bands = DiagnosticImage(np.zeros((3, 32, 32)), "regression", multi, 50,
                            dims=("band", "y", "x"))
    assert bands.n_targets == 1 and bands.n_bands == 3 and bands.names == ["unknown"]
    assert bands.band(2).shape == (32, 32)


@pytest.mark.parametrize("kwargs, error, text", [
    ({"z": np.zeros((3, 8, 8))}, TypeError, "dims must be given for a 3-D z"),
    ({"z": np.zeros((3, 8, 8)), "dims": ("y", "x", "band")}, ValueError,
     "ordered sub-sequence"),
    ({"z": np.zeros((3, 8, 8)), "dims": ("target", "band", "y", "x")}, ValueError,
     "must name every axis"),
    ({"z": np.zeros((3, 8, 8)), "dims": ("target", "y", "x"), "targets": ["a"]},
     ValueError, "targets must name each of the 3 targets"),
    ({"z": np.zeros((8, 8)), "targets": ["a"]}, ValueError, "has no 'target' axis"),
])
def test_dims_are_explicit_never_guessed(kwargs, error, text):
    with pytest.raises(error, match=text):
        DiagnosticImage(method="regression", spec=None, n_trials=0, **kwargs)


def test_producers_fill_the_dims(small_spec, small_centers, rng):
    one = classification_image(small_spec, small_centers, rng.normal(size=400),
                               observer="person", progress=False)
    assert one.dims == ("y", "x") and one.observer == "person" and one.targets is None
    many = classification_image(small_spec, small_centers, rng.normal(size=(400, 2)),
                                targets=["v1", "v2"], observer="voxel", progress=False)
    assert many.dims == ("target", "y", "x") and many.names == ["v1", "v2"]
    multi = BubbleSpec(shape=(32, 32), sigma=1.5, n_bubbles=12, bands=2)
    c = sample_centers(multi, 0, 100)
    both = classification_image(multi, c, rng.normal(size=(100, 3)), progress=False)
    assert both.dims == ("target", "band", "y", "x") and both.maps().shape == (3, 2, 32, 32)
