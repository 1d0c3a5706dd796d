import json

import numpy as np
import pytest

from bubbles import BubbleSpec, fwhm_to_sigma, sigma_to_fwhm


def test_fwhm_published_values():
    assert sigma_to_fwhm(20) == pytest.approx(47.0964, abs=1e-4)
    assert sigma_to_fwhm(4) == pytest.approx(9.4193, abs=1e-4)
    assert fwhm_to_sigma(sigma_to_fwhm(7.5)) == pytest.approx(7.5)


def test_defaults_single_scale():
    spec = BubbleSpec()
    assert spec.shape == (256, 256)
    assert spec.n_bands == 1 and not spec.multiscale
    assert spec.sigmas == (10.0,) and spec.n_per_band == (20,)


def test_multiscale_sigma_doubles_and_counts_add_up():
    spec = BubbleSpec(shape=(256, 256), sigma=5.8, n_bubbles=100, bands=5)
    assert spec.sigmas == pytest.approx([5.8 * 2 ** k for k in range(5)])
    counts = spec.n_per_band
    assert sum(counts) == 100 == spec.total_bubbles
    # finer bands get more bubbles, in proportion to 1 / sigma^2
    assert list(counts) == sorted(counts, reverse=True)
    assert counts[0] / max(counts[1], 1) == pytest.approx(4, rel=0.1)


def test_per_band_lists():
    spec = BubbleSpec(sigma=[2, 4, 8], n_bubbles=[30, 10, 3], bands=3)
    assert spec.sigmas == (2.0, 4.0, 8.0) and spec.n_per_band == (30, 10, 3)


def test_json_round_trip_with_region():
    region = np.zeros((32, 40), bool)
    region[5:20, 10:30] = True
    spec = BubbleSpec(shape=(32, 40), sigma=3, n_bubbles=4, aperture="disk",
                      polarity="occlude", overlap="max", search_region=region,
                      background=0.3)
    text = spec.to_json()
    d = json.loads(text)
    assert d["format"] == "bubbles.BubbleSpec" and d["version"] == 1
    back = BubbleSpec.from_json(text)
    assert back == spec
    np.testing.assert_array_equal(back.search_region, region)
    assert back.background == 0.3 and back.aperture == "disk"


def test_replace_validates():
    spec = BubbleSpec(n_bubbles=20)
    assert spec.replace(n_bubbles=35).n_bubbles == 35
    with pytest.raises(ValueError, match="n_bubbles must be a whole number >= 0"):
        spec.replace(n_bubbles=-1)


def test_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        BubbleSpec().sigma = 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(sigma=-3), "sigma must be > 0 pixels, got -3"),
    (dict(sigma=0), "sigma must be > 0 pixels"),
    (dict(n_bubbles=2.5), "n_bubbles must be a whole number"),
    (dict(shape=(0, 10)), "shape must be"),
    (dict(shape=(10,)), "shape must be"),
    (dict(bands=0), "bands must be None or an integer >= 1"),
    (dict(bands=3, sigma=[1, 2]), "sigma must be a scalar or have one value per band"),
    (dict(bands=2, n_bubbles=[1, 2, 3]), "n_bubbles must be a scalar or have one value"),
    (dict(aperture="star"), "'aperture' must be one of"),
    (dict(polarity="inverse"), "'polarity' must be one of"),
    (dict(overlap="mean"), "'overlap' must be one of"),
    (dict(background="white"), "background must be 'mean', 'noise' or a grey level"),
    (dict(background=1.5), "background must be 'mean', 'noise' or a grey level"),
    (dict(shape=(8, 8), search_region=np.ones((4, 4), bool)), "search_region must have"),
    (dict(shape=(8, 8), n_bubbles=5, search_region=np.eye(8, dtype=bool)[:, ::-1] & False),
     "search_region has 0 pixels"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BubbleSpec(**kwargs)


def test_from_dict_rejects_other_versions():
    d = BubbleSpec().to_dict()
    d["version"] = 99
    with pytest.raises(ValueError, match="version 99 is not supported"):
        BubbleSpec.from_dict(d)
    with pytest.raises(ValueError, match="not a BubbleSpec"):
        BubbleSpec.from_dict({"shape": [3, 3]})


def test_from_dict_names_missing_keys():
    d = BubbleSpec().to_dict()
    del d["sigma"]
    with pytest.raises(ValueError, match=r"missing \['sigma'\]"):
        BubbleSpec.from_dict(d)
