import json
import warnings

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


# -- issue 9: every bad input named --------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(shape=(64.7, 64.2)), r"shape must be \(H, W\), two whole numbers >= 1 pixels, "
                               r"got \(64.7, 64.2\)"),
    (dict(shape="64"), "shape must be"),
    (dict(shape=(64, None)), "shape must be"),
    (dict(sigma=None), r"sigma must be > 0 pixels \(a number, or one per band\), got None"),
    (dict(sigma="3"), r"sigma must be > 0 pixels .* got '3'"),
    (dict(sigma=float("nan")), "sigma must be > 0 pixels, got nan"),
    (dict(bands=2, sigma=[1, None]), r"sigma must be > 0 pixels .* got \[1, None\]"),
    (dict(n_bubbles="20"), r"n_bubbles must be a whole number >= 0 .* got '20'"),
    (dict(n_bubbles=None), "n_bubbles must be a whole number >= 0"),
    (dict(bands=float("nan")), "bands must be None or an integer >= 1, got nan"),
    (dict(bands=2.5), "bands must be None or an integer >= 1, got 2.5"),
    (dict(background=None), "background must be 'mean', 'noise' or a grey level"),
    (dict(background=True), "background must be 'mean', 'noise' or a grey level"),
])
def test_bad_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BubbleSpec(**kwargs)


def test_whole_floats_accepted_as_integers():
    spec = BubbleSpec(shape=(64.0, 48.0), n_bubbles=12.0, bands=2.0, sigma=3)
    assert spec.shape == (64, 48) and spec.n_bubbles == 12 and spec.bands == 2
    assert all(type(v) is int for v in spec.shape + (spec.n_bubbles, spec.bands))


def test_n_bubbles_above_the_pixel_count_is_refused():
    with pytest.raises(ValueError, match=r"n_bubbles=1000000 needs 1000000 distinct centre "
                                         r"pixels in one band, more than the 4096 pixels "
                                         r"of a 64 x 64 image"):
        BubbleSpec(shape=(64, 64), n_bubbles=10 ** 6)
    with pytest.raises(ValueError, match=r"n_bubbles=\(2, 5000\) needs 5000 .* 4096 pixels"):
        BubbleSpec(shape=(64, 64), sigma=2, n_bubbles=[2, 5000], bands=2)
    assert BubbleSpec(shape=(8, 8), n_bubbles=64).n_bubbles == 64     # every pixel: fine
    region = np.zeros((8, 8), bool)
    region[:2, :3] = True
    with pytest.raises(ValueError, match=r"search_region has 6 pixels, fewer than the 7 "
                                         r"bubbles a trial needs in one band \(n_bubbles=7\)"):
        BubbleSpec(shape=(8, 8), n_bubbles=7, search_region=region)


def test_search_region_values():
    nan_region = np.full((8, 8), np.nan)
    with pytest.raises(ValueError, match=r"search_region must hold booleans or the numbers 0 "
                                         r"and 1 .* got 64 other values, e.g. \[nan\]"):
        BubbleSpec(shape=(8, 8), n_bubbles=3, search_region=nan_region)
    half = np.zeros((8, 8))
    half[0, 0] = 0.5
    with pytest.raises(ValueError, match=r"e.g. \[0.5\]"):
        BubbleSpec(shape=(8, 8), n_bubbles=0, search_region=half)
    with pytest.raises(ValueError, match="search_region must hold booleans"):
        BubbleSpec(shape=(2, 2), n_bubbles=1, search_region=np.array([["a", "b"], ["c", "d"]]))
    ones = np.zeros((8, 8))
    ones[2:4, 2:4] = 1.0
    spec = BubbleSpec(shape=(8, 8), n_bubbles=3, search_region=ones)
    np.testing.assert_array_equal(spec.allowed_pixels, [18, 19, 26, 27])


def test_more_bands_than_the_image_holds_warns():
    with pytest.warns(UserWarning, match=r"bands=12 is more than a 64 x 64 image holds: "
                                         r"one-octave bands stop at 6 .* bands 7 to 12 .* "
                                         r"use bands <= 6"):
        BubbleSpec(shape=(64, 64), sigma=2, n_bubbles=40, bands=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BubbleSpec(shape=(64, 64), sigma=2, n_bubbles=40, bands=6)
        BubbleSpec(shape=(32, 32), sigma=1.0, n_bubbles=60, bands=5)


def test_broken_json_is_named(tmp_path):
    with pytest.raises(ValueError, match="BubbleSpec JSON is not valid JSON"):
        BubbleSpec.from_json('{"shape": [64, 64],')
    path = tmp_path / "spec.json"
    path.write_text('{"shape": [64, 64],')
    with pytest.raises(ValueError, match=r"spec file '.*spec\.json': BubbleSpec JSON is not "
                                         r"valid JSON: Expecting property name"):
        BubbleSpec.load(path)
    d = BubbleSpec().to_dict()
    d["sigma"] = -3
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"spec file '.*spec\.json': sigma must be > 0 pixels"):
        BubbleSpec.load(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"spec file '.*spec\.json': not a BubbleSpec"):
        BubbleSpec.load(path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match=r"spec file '.*spec\.json' is not UTF-8 text"):
        BubbleSpec.load(path)
    with pytest.raises(FileNotFoundError, match=r"spec file '.*nowhere\.json' does not exist"):
        BubbleSpec.load(tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        BubbleSpec.load(tmp_path)


def test_save_load_round_trip(tmp_path):
    region = np.zeros((16, 24), bool)
    region[3:9, 4:20] = True
    spec = BubbleSpec(shape=(16, 24), sigma=[1.5, 3.0], n_bubbles=[6, 2], bands=2,
                      search_region=region, background="noise")
    back = BubbleSpec.load(spec.save(tmp_path / "s.json"))
    assert back == spec
    np.testing.assert_array_equal(back.search_region, region)


def test_from_dict_damaged_region_is_named():
    d = BubbleSpec(shape=(8, 8), n_bubbles=1, search_region=np.eye(8, dtype=bool)).to_dict()
    d["search_region"] = "not base64!"
    with pytest.raises(ValueError, match="search_region must be the base64 text"):
        BubbleSpec.from_dict(d)
    d["search_region"] = "AA=="                       # 8 bits for 64 pixels
    with pytest.raises(ValueError, match=r"search_region holds 8 bits, fewer than the 64"):
        BubbleSpec.from_dict(d)


def test_numpy_scalars_and_zero_d_arrays_are_numbers():
    spec = BubbleSpec(shape=np.array([32, 48]), sigma=np.array(3.0), n_bubbles=np.int64(5),
                      bands=np.array(2), background=np.float32(0.25))
    assert (spec.shape, spec.sigma, spec.n_bubbles, spec.bands, spec.background) == \
        ((32, 48), 3.0, 5, 2, 0.25)
    assert BubbleSpec.from_json(spec.to_json()) == spec
