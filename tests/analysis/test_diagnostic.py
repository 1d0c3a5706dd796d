"""DiagnosticImage persistence and figures (no pyplot state leaks)."""

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

from analysis import DiagnosticImage, classification_image, cluster_test, pixel_test
from analysis.figures import plot_diagnostic_image
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
    pix, clu = pixel_test(z, 2.0), cluster_test(z, 2.0)
    path = DiagnosticImage(z, "regression", None, 10).to_png(
        tmp_path / "a.png", background=np.full((32, 32), 0.5), pixel=pix, cluster=clu)
    assert path.stat().st_size > 1000
    with pytest.raises(FileExistsError):
        DiagnosticImage(z, "regression", None, 10).to_png(path, overwrite=False)
    with pytest.raises(ValueError, match="background must have the map's shape"):
        plot_diagnostic_image(z, background=np.zeros((4, 4)))
    assert plt.get_fignums() == before
