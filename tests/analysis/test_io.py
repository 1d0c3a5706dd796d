"""Stat4Ci files and the toolbox's demo on the real GENDER and EXNEX images (subject FG)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from PIL import Image

from analysis.io import (read_ci, read_image, read_packed_rgb, read_search_region,
                         stat4ci_demo, zscore_outside)


def test_packed_rgb_round_trip(tmp_path, rng):
    values = rng.integers(0, 2 ** 24, size=(8, 9))
    rgb = np.stack([values >> 16, (values >> 8) & 255, values & 255], -1).astype(np.uint8)
    path = tmp_path / "ci.tiff"
    Image.fromarray(rgb).save(path)
    assert_allclose(read_packed_rgb(path), values, atol=0)
    assert_allclose(read_ci(path), values, atol=0)


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_packed_rgb(tmp_path / "missing.tiff")
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(grey)
    with pytest.raises(ValueError, match="must be an RGB image"):
        read_packed_rgb(grey)
    with pytest.raises(ValueError, match="search_region must have"):
        zscore_outside(np.zeros((4, 4)), np.zeros((3, 3), bool))


def test_stat4ci_files(stat4ci_dir):
    region = read_search_region(stat4ci_dir / "facemask.tiff")
    assert region.shape == (256, 256) and region.dtype == bool
    assert int(region.sum()) == 36798          # the published face region size
    face = read_image(stat4ci_dir / "w1H.jpg")
    assert face.shape == (256, 256) and 0 <= face.min() and face.max() <= 1
    ci = read_packed_rgb(stat4ci_dir / "GenderFG.tiff")
    assert ci.shape == (256, 256) and np.ptp(ci) > 0


def test_demo_gender(stat4ci_dir):
    res = stat4ci_demo(stat4ci_dir / "GenderFG.tiff", stat4ci_dir / "facemask.tiff",
                       sigma=20, p=0.05, cluster_threshold=2.7)
    # the z-scoring: outside the region z is 0 (multiplied by the region)
    assert np.all(res.z[~res.search_region] == 0)
    assert_allclose(res.pixel.threshold, 3.30, atol=5e-3)
    assert_allclose(res.cluster.min_cluster_size, 861.7, rtol=1e-3)
    assert_allclose(res.z.max(), 4.2387, atol=1e-3)
    assert res.pixel.n_significant == 924
    sig = res.cluster.significant_clusters
    # the two eyes: one cluster each side of the face midline, at eye height
    assert [c.size for c in sig] == [993, 932]
    cents = sorted((c.centroid for c in sig), key=lambda rc: rc[1])
    assert_allclose(cents[0], (125.87, 89.35), atol=0.05)
    assert_allclose(cents[1], (126.73, 158.74), atol=0.05)
    assert all(110 < rc[0] < 140 for rc in cents)


def test_demo_exnex(stat4ci_dir):
    res = stat4ci_demo(stat4ci_dir / "ExnexFG.tiff", stat4ci_dir / "facemask.tiff")
    assert_allclose(res.pixel.threshold, 3.30, atol=5e-3)
    assert_allclose(res.z.max(), 5.3080, atol=1e-3)
    assert res.pixel.n_significant == 852
    sig = res.cluster.significant_clusters
    # expressive vs not: one cluster, the mouth (below the eyes, on the midline)
    assert len(sig) == 1 and sig[0].size == 1747
    assert_allclose(sig[0].centroid, (204.44, 133.27), atol=0.05)
    assert sig[0].peak == (200, 148)


def test_read_image_scales_by_bit_depth(tmp_path):
    # 8-bit: / 255 even when the image is dark (max <= 1 used to be read as [0, 1])
    dark = np.zeros((4, 4), np.uint8)
    dark[0, 0] = 1
    Image.fromarray(dark).save(tmp_path / "dark.png")
    a = read_image(tmp_path / "dark.png")
    assert a.dtype == np.float64 and a[0, 0] == pytest.approx(1 / 255)
    # 16-bit: / 65535 (convert('L') used to clip everything above 255 to white)
    v = np.array([[0, 1000], [32768, 65535]], np.uint16)
    Image.fromarray(v).save(tmp_path / "deep.png")
    assert_allclose(read_image(tmp_path / "deep.png"), v / 65535.0, atol=1e-6)
    # float images in [0, 1] as they are
    f = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    Image.fromarray(f).save(tmp_path / "float.tiff")          # mode F
    assert_allclose(read_image(tmp_path / "float.tiff"), f, atol=1e-7)
    # errors name the file
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        read_image(tmp_path / "nothing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        read_image(tmp_path / "bad.png")
