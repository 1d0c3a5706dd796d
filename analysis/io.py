"""Reading classification images and search regions from files; the Stat4Ci demo.

The Stat4Ci toolbox (Chauvin et al., 2005) distributes classification images as 24-bit
values packed in the RGB channels of a TIFF (``value = R * 65536 + G * 256 + B``, its
``cIm2hrCi``), search regions as 8-bit images (255 inside) and a face as background.
:func:`stat4ci_demo` reproduces the toolbox's demo: z-score the image with the mean and
SD (ddof=1) of the pixels outside the search region, multiply by the region, then run
the pixel and cluster tests with sigma 20, p .05 and t_C 2.7.

References
----------
Chauvin, A., Worsley, K. J., Schyns, P. G., Arguin, M. & Gosselin, F. (2005).
Accurate statistical tests for smooth classification images. J. Vis. 5(9):1.
:doi:`10.1167/5.9.1`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import bubbles_data
from bubbles import load_grey

from .diagnostic import read_npz
from .stats import ClusterTest, PixelTest, cluster_test, pixel_test
from .zscore import zscore

__all__ = ["read_packed_rgb", "read_search_region", "read_image", "read_ci",
           "zscore_outside", "stat4ci_demo", "Stat4CiResult", "read_npy",
           "read_background"]


def _open(path, what):
    """The raw PIL image (packed RGB, raw grey levels); grey images in [0, 1] are read
    with :func:`bubbles.load_grey` instead."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as exc:   # PIL raises several types for unreadable files
        raise ValueError(f"cannot read {what} file {path}: {exc}") from exc


def read_packed_rgb(path):
    """Read a Stat4Ci classification image: 24-bit value packed in RGB.

    Returns float64 ``R * 65536 + G * 256 + B`` of shape (H, W).

    Examples
    --------
    >>> ci = read_packed_rgb("GenderFG.tiff")          # doctest: +SKIP
    """
    im = _open(path, "classification image")
    a = np.asarray(im)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"{path} must be an RGB image with the value packed in R, G, B "
                         f"(Stat4Ci format), got array of shape {a.shape} (mode {im.mode})")
    a = a[..., :3].astype(np.float64)
    return a[..., 0] * 65536.0 + a[..., 1] * 256.0 + a[..., 2]


def read_search_region(path, shape=None, *, level=128):
    """Read a search region: a ``.npy`` boolean (or 0/1) array, or an image, True where
    the grey level is >= ``level`` (255 inside). With ``shape``, a region of another
    shape is an error naming the file."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        a = read_npy(path)
        if not np.isin(a, (0, 1)).all():
            raise ValueError(f"search region {path} must hold booleans or 0/1, got values "
                             f"in [{np.nanmin(a):g}, {np.nanmax(a):g}]")
        region = a.astype(bool)
    else:
        im = _open(path, "search region")
        a = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I;16", "I", "F")
                       else im)
        region = a.astype(np.float64) >= level if a.dtype != bool else a
    if shape is not None and region.shape != tuple(shape):
        raise ValueError(f"search region {path} has shape {region.shape}, the image has "
                         f"{tuple(shape)}")
    return region


def read_image(path):
    """Read an image as grey float64 in [0, 1] (e.g. the background face).

    :func:`bubbles.load_grey` does the reading: 8-bit / 255, 16-bit / 65535, float
    images as they are (must lie in [0, 1]), colour as BT.601 luminance. Errors name
    the file.
    """
    return load_grey(path).astype(np.float64)


def read_npy(path):
    """A numeric ``.npy`` array as float64 (never unpickled); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a .npy file)")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npy array of numbers ({exc})") from None
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{path} must hold numbers, got dtype {a.dtype}")
    return a.astype(np.float64)


def read_background(path, shape):
    """Read the grey image drawn under a map (``.npy`` or an image file) of ``shape``."""
    bg = read_npy(path) if str(path).endswith(".npy") else read_image(path)
    if bg.shape != tuple(shape):
        raise ValueError(f"background {path} has shape {bg.shape}, expected the maps' "
                         f"shape {tuple(shape)}")
    return bg


def read_ci(path):
    """Read a classification image from ``.npy``, ``.npz`` (array ``z``), a packed-RGB
    Stat4Ci image or a grey image (raw grey levels)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"classification image file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy(path)
    if suffix == ".npz":
        arrays = read_npz(path)
        if "z" not in arrays:
            raise ValueError(f"{path} must hold an array named 'z', has {sorted(arrays)}")
        return arrays["z"].astype(np.float64)
    im = _open(path, "classification image")
    if im.mode in ("RGB", "RGBA"):
        return read_packed_rgb(path)
    return np.asarray(im, dtype=np.float64)


def zscore_outside(ci, search_region):
    """z-score ``ci`` with the mean and SD (ddof=1) of the pixels outside the region,
    then multiply by the region (the Stat4Ci demo)."""
    ci = np.asarray(ci, dtype=np.float64)
    region = np.asarray(search_region, bool)
    if region.shape != ci.shape:
        raise ValueError(f"search_region must have the image's shape {ci.shape}, got "
                         f"{region.shape}")
    outside = ci[~region]
    if outside.size < 2:
        raise ValueError("z-scoring outside the search region needs at least 2 pixels "
                         f"outside it, got {outside.size}")
    if np.ptp(outside) == 0:
        raise ValueError("the pixels outside the search region are constant; cannot "
                         "z-score with them")
    return zscore(ci, axis=(0, 1), ddof=1, where=~region) * region


@dataclass
class Stat4CiResult:
    """z map and both tests of :func:`stat4ci_demo`."""

    z: np.ndarray
    search_region: np.ndarray
    pixel: PixelTest
    cluster: ClusterTest


def stat4ci_demo(ci=None, search_region=None, *, sigma=20.0, p=0.05, cluster_threshold=2.7,
                 tail="upper"):
    """Run the Stat4Ci demo on a classification image.

    Parameters
    ----------
    ci : ndarray or path, optional
        Raw classification image (or a file :func:`read_ci` reads); default: the
        embedded GenderFG.tiff of Gosselin & Schyns (2001), subject FG.
    search_region : ndarray of bool or path, optional
        Default: the embedded facemask.tiff.
    sigma : float
        Bubble sigma in pixels (20 in the toolbox demo, FWHM 47.1).
    p : float
    cluster_threshold : float
        Cluster-forming threshold t_C.
    tail : {'upper', 'lower', 'both'}

    Returns
    -------
    Stat4CiResult

    Examples
    --------
    >>> res = stat4ci_demo()          # the embedded GenderFG.tiff and facemask.tiff
    >>> round(res.pixel.threshold, 2), round(res.cluster.min_cluster_size, 1)
    (3.3, 861.1)
    """
    ci = bubbles_data.path("stat4ci/GenderFG.tiff") if ci is None else ci
    if search_region is None:
        search_region = bubbles_data.path("stat4ci/facemask.tiff")
    if isinstance(ci, (str, Path)):
        ci = read_ci(ci)
    if isinstance(search_region, (str, Path)):
        search_region = read_search_region(search_region)
    region = np.asarray(search_region, bool)
    z = zscore_outside(ci, region)
    return Stat4CiResult(
        z=z, search_region=region,
        pixel=pixel_test(z, sigma, p, search_region=region, tail=tail),
        cluster=cluster_test(z, sigma, p, cluster_threshold=cluster_threshold,
                             search_region=region, tail=tail))
