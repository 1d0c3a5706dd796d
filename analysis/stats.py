"""Significance of smooth classification images: random field theory and permutations.

The pixel test and the cluster test of the Stat4Ci toolbox (Chauvin et al., 2005),
for 1-D and 2-D Gaussian random fields, solved exactly (no grid). The
distribution-free permutation max-statistic alternative (pixel maximum and cluster
mass) is :func:`analysis.permutation.permutation_test`.

A z map of a single observer has shape ``(H, W)`` (2-D) or ``(N,)`` (1-D). Stacked maps
(targets or bands before the spatial axes) are tested map by map with the same
threshold; pass ``ndim`` when the leading axes should not be read as space.

References
----------
Chauvin, A., Worsley, K. J., Schyns, P. G., Arguin, M. & Gosselin, F. (2005).
Accurate statistical tests for smooth classification images. Journal of Vision 5(9):1.
:doi:`10.1167/5.9.1`

Worsley, K. J., Marrett, S., Neelin, P., Vandal, A. C., Friston, K. J. & Evans, A. C.
(1996). A unified statistical approach for determining significant signals in images
of cerebral activation. Human Brain Mapping 4, 58-73.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, optimize, special, stats

from bubbles import sigma_to_fwhm as _bubbles_sigma_to_fwhm

__all__ = [
    "PixelTest", "ClusterTest", "Cluster",
    "pixel_test", "cluster_test",
    "pixel_threshold", "cluster_size_threshold", "resels", "ec_density",
    "rft_warnings", "sigma_to_fwhm",
]

_TAILS = ("upper", "lower", "both")

#: The bubbles helper (``FWHM = sigma * sqrt(8 ln 2)``), kept importable from here.
sigma_to_fwhm = _bubbles_sigma_to_fwhm


# -- random field theory -------------------------------------------------------------
def ec_density(t, d):
    """Euler characteristic density of a unit Gaussian field at threshold ``t``.

    ``d`` is the dimension (0, 1 or 2), with the field's smoothness in FWHM units
    (Worsley et al. 1996; Chauvin et al. 2005, eq. 5):
    ``EC0 = 1 - Phi(t)``, ``EC1 = sqrt(4 ln 2) / (2 pi) exp(-t^2/2)``,
    ``EC2 = 4 ln 2 / (2 pi)^(3/2) t exp(-t^2/2)``.

    Examples
    --------
    >>> round(float(ec_density(0.0, 1)), 4)
    0.265
    """
    t = np.asarray(t, dtype=float)
    if d == 0:
        return stats.norm.sf(t)
    if d == 1:
        return math.sqrt(4 * math.log(2)) / (2 * math.pi) * np.exp(-t * t / 2)
    if d == 2:
        return 4 * math.log(2) / (2 * math.pi) ** 1.5 * t * np.exp(-t * t / 2)
    raise ValueError(f"d must be 0, 1 or 2, got {d!r}")


def resels(n_pixels, fwhm, ndim):
    """Resel counts ``[R0, R1(, R2)]`` of a search region of ``n_pixels`` pixels.

    2-D regions are approximated by a disk of radius ``r = sqrt(N / pi)`` as in Stat4Ci:
    ``R = [1, pi r / FWHM, N / FWHM^2]``; 1-D: ``R = [1, N / FWHM]``. The disk
    approximation is slightly liberal for elongated regions (Chauvin et al. 2005).

    Examples
    --------
    >>> [round(r, 3) for r in resels(257, 11.8, 1)]
    [1.0, 21.78]
    """
    n = float(n_pixels)
    if ndim == 1:
        return [1.0, n / fwhm]
    if ndim == 2:
        r = math.sqrt(n / math.pi)
        return [1.0, math.pi * r / fwhm, n / fwhm ** 2]
    raise ValueError(f"ndim must be 1 or 2, got {ndim!r}")


def _check_p(p):
    if not (isinstance(p, (int, float, np.floating)) and 0.0 < float(p) < 1.0):
        raise ValueError(f"p must be a probability in (0, 1), got {p!r}")
    return float(p)


def _check_sigma(sigma):
    if not (np.isscalar(sigma) and np.isfinite(sigma) and float(sigma) > 0):
        raise ValueError(f"sigma must be > 0 pixels (the smoothing standard deviation), "
                         f"got {sigma!r}")
    return float(sigma)


def _rft_pmax(t, res):
    """P(max Z > t) by the expected Euler characteristic."""
    return sum(r * ec_density(t, d) for d, r in enumerate(res))


def pixel_threshold(n_pixels, fwhm, p=0.05, *, ndim=2):
    """Corrected pixel threshold: the smaller of the RFT and Bonferroni thresholds.

    Returns ``(threshold, rft_threshold, bonferroni_threshold)``. The RFT threshold
    solves ``sum_d R_d EC_d(t) = p`` exactly (Brent's method); Bonferroni is
    ``Phi^-1(1 - p / N)``.

    Examples
    --------
    >>> [round(t, 2) for t in pixel_threshold(36798, sigma_to_fwhm(20))]
    [3.3, 3.3, 4.69]
    """
    return _pixel_threshold(n_pixels, fwhm, _check_p(p), ndim)[:3]


def _pixel_threshold(n_pixels, fwhm, p, ndim, res=None):
    """:func:`pixel_threshold` plus the resels it used: ``(thr, rft, bonf, res)``."""
    if res is None:
        res = resels(n_pixels, fwhm, ndim)
    lo = stats.norm.isf(p)                      # P(max) >= EC0 term, so t >= isf(p)
    f = lambda t: _rft_pmax(t, res) - p         # noqa: E731
    rft = lo if f(lo) <= 0 else optimize.brentq(f, lo, 60.0, xtol=1e-12)
    bonf = float(stats.norm.isf(p / n_pixels))
    return min(rft, bonf), float(rft), bonf, res


def cluster_size_threshold(n_pixels, fwhm, p=0.05, *, cluster_threshold=2.7, ndim=2):
    """Critical cluster size (pixels) of the Stat4Ci cluster test.

    ``c = Gamma(D/2 + 1) EC_D(t_C) / (FWHM^D P(Z > t_C))``,
    ``k = (-ln(-ln(1 - p) / (R_D EC_D(t_C))))^(D/2) / c`` (Chauvin et al. 2005).
    ``p`` is honoured (the toolbox always used .05).

    Examples
    --------
    >>> round(cluster_size_threshold(257, 11.8, ndim=1), 1)
    6.9
    """
    p = _check_p(p)
    t = _check_cluster_threshold(cluster_threshold)
    res = resels(n_pixels, fwhm, ndim)
    return _cluster_size(res, _cluster_constants(fwhm, t, ndim), p, ndim)


#: Cluster-forming thresholds the RFT cluster test accepts: above 0 (the Euler
#: characteristic density vanishes at 0) and at most 10 (beyond, P(Z > t) underflows).
CLUSTER_THRESHOLD_RANGE = (0.0, 10.0)


def _check_cluster_threshold(t):
    lo, hi = CLUSTER_THRESHOLD_RANGE
    if isinstance(t, bool) or not (np.isscalar(t) and np.isreal(t) and lo < t <= hi):
        raise ValueError(f"cluster_threshold must be a z value in ({lo:g}, {hi:g}] (the "
                         "cluster-forming threshold t_C; 2.7 in the Stat4Ci demo, >= 2.5 "
                         f"recommended), got {t!r}")
    return float(t)


def _cluster_constants(fwhm, threshold, ndim):
    """``(EC_D(t_C), c)`` of the cluster test, ``c = Gamma(D/2 + 1) EC_D(t_C) /
    (FWHM^D P(Z > t_C))`` (Chauvin et al. 2005), computed once per test."""
    ec = float(ec_density(threshold, ndim))
    c = special.gamma(ndim / 2 + 1) * ec / (fwhm ** ndim * stats.norm.sf(threshold))
    return ec, c


def _cluster_size(res, constants, p, ndim):
    ec, c = constants
    inner = -math.log(1 - p) / (res[ndim] * ec)
    if inner >= 1.0:   # fewer expected clusters than p: any cluster is significant
        return 0.0
    return float((-math.log(inner)) ** (ndim / 2) / c)


def _cluster_p(size, res, constants, ndim):
    ec, c = constants
    return float(1 - math.exp(-res[ndim] * ec * math.exp(-(c * size) ** (2 / ndim))))


# -- helpers shared by the tests -----------------------------------------------------
def _prepare(z, search_region, ndim):
    z = np.asarray(z, dtype=float)
    if ndim is None:
        ndim = 1 if z.ndim == 1 else 2
    if ndim not in (1, 2):
        raise ValueError(f"ndim must be 1 or 2, got {ndim!r}")
    if z.ndim < ndim:
        raise ValueError(f"z must have at least {ndim} axes for a {ndim}-D test, "
                         f"got shape {z.shape}")
    space = z.shape[z.ndim - ndim:]
    if search_region is None:
        region = np.ones(space, bool)
    else:
        region = np.asarray(search_region)
        if region.shape != space:
            raise ValueError(f"search_region must have the map's spatial shape {space}, "
                             f"got {region.shape}")
        region = region.astype(bool)
    n = int(region.sum())
    if n == 0:
        raise ValueError("search_region must contain at least one pixel, got none")
    bad = ~np.isfinite(z[..., region])
    if bad.any():
        raise ValueError(f"z must be finite inside the search region, got {int(bad.sum())} "
                         "NaN/inf value(s) there")
    return z, region, ndim, n


def _check_tail(tail):
    if tail not in _TAILS:
        raise ValueError(f"'tail' must be one of {list(_TAILS)}. {tail!r} was provided.")
    return tail


def rft_warnings(n_pixels, fwhm, ndim=2):
    """Reasons why random field theory is not valid for this search region, or [].

    Stat4Ci's validity conditions (Chauvin et al. 2005): FWHM of at least about 5 px,
    and a search region larger than about 3 FWHM across (2-D: the diameter
    ``2 sqrt(N / pi)`` of the disk of the same area; 1-D: its length).

    Examples
    --------
    >>> rft_warnings(36798, sigma_to_fwhm(20))
    []
    >>> len(rft_warnings(256 * 256, sigma_to_fwhm(92.8)))
    1
    """
    out = []
    if fwhm < 5.0:
        out.append(f"FWHM {fwhm:.2f} px is below the 5 px that random field theory needs "
                   "(Chauvin et al. 2005): its p-values are not reliable for so rough a "
                   "map; use permutation_test")
    across = float(n_pixels) if ndim == 1 else 2 * math.sqrt(n_pixels / math.pi)
    if across < 3 * fwhm:
        out.append(f"the search region ({int(n_pixels)} px, about {across:.0f} px across) "
                   f"spans {across / fwhm:.1f} FWHM (FWHM {fwhm:.1f} px), below the 3 FWHM "
                   "that random field theory needs (Chauvin et al. 2005): its thresholds "
                   "are not reliable; use a smaller sigma, a larger region or "
                   "permutation_test")
    return out


def _setup(z, sigma, p, tail, search_region, ndim):
    """Checks shared by the pixel and cluster tests, and the RFT validity notes."""
    sigma, p, tail = _check_sigma(sigma), _check_p(p), _check_tail(tail)
    z, region, ndim, n = _prepare(z, search_region, ndim)
    fwhm = sigma_to_fwhm(sigma)
    return z, region, ndim, n, sigma, p, tail, fwhm, rft_warnings(n, fwhm, ndim)


def _tail_maps(z, tail):
    """Signed copies of z to test in the upper tail: [(sign, map), ...]."""
    if tail == "upper":
        return [(1, z)]
    if tail == "lower":
        return [(-1, -z)]
    return [(1, z), (-1, -z)]


@dataclass
class PixelTest:
    """Result of :func:`pixel_test`.

    Attributes
    ----------
    threshold : float
        Corrected z threshold (smaller of RFT and Bonferroni).
    rft_threshold, bonferroni_threshold : float
    significant : ndarray of bool, shaped like z
        Pixels inside the search region beyond the threshold (in the tested tail).
    p_values : ndarray of float, shaped like z
        Family-wise corrected p-value of each pixel: ``min(1, RFT P(max Z >= |z|),
        Bonferroni N (1 - Phi(|z|)))``, doubled for ``tail='both'``; 1 outside the region.
    warnings : list of str
        Why random field theory may not be valid here (:func:`rft_warnings`); empty
        when its conditions hold. The same messages are issued as ``UserWarning``.
    """

    threshold: float
    rft_threshold: float
    bonferroni_threshold: float
    significant: np.ndarray
    p_values: np.ndarray
    p: float
    sigma: float
    fwhm: float
    n_pixels: int
    resels: list
    tail: str = "upper"
    warnings: list = field(default_factory=list)

    @property
    def n_significant(self):
        return int(self.significant.sum())

    def to_dict(self):
        """JSON-ready summary (no arrays)."""
        return {"test": "pixel", "threshold": self.threshold,
                "rft_threshold": self.rft_threshold,
                "bonferroni_threshold": self.bonferroni_threshold, "p": self.p,
                "sigma": self.sigma, "fwhm": self.fwhm, "n_pixels": self.n_pixels,
                "resels": list(self.resels), "tail": self.tail,
                "n_significant": self.n_significant, "warnings": list(self.warnings)}


def pixel_test(z, sigma, p=0.05, *, search_region=None, tail="upper", ndim=None):
    """Random-field pixel test of a smooth z map (Stat4Ci ``StatThresh`` pixel test).

    Parameters
    ----------
    z : ndarray, shape (N,), (H, W) or (..., H, W)
        z scores; leading axes are separate maps tested with the same threshold.
    sigma : float
        Standard deviation in pixels of the Gaussian that smoothed the map (the bubble
        sigma for a centre-based CI); FWHM = sigma * sqrt(8 ln 2).
    p : float
        Family-wise error rate (two tails share it equally with ``tail='both'``).
    search_region : ndarray of bool, optional
        Pixels to test (spatial shape); all pixels when None.
    tail : {'upper', 'lower', 'both'}
    ndim : {1, 2}, optional
        Spatial dimensions; default 1 for a 1-D z, else 2.

    Returns
    -------
    PixelTest

    Examples
    --------
    >>> z = np.zeros((256, 256)); z[100, 100] = 4.0
    >>> res = pixel_test(z, 20)
    >>> round(res.threshold, 2), res.n_significant
    (3.47, 1)

    References
    ----------
    Chauvin et al. (2005), J. Vis. 5(9):1. :doi:`10.1167/5.9.1`
    """
    z, region, ndim, n, sigma, p, tail, fwhm, notes = _setup(z, sigma, p, tail,
                                                             search_region, ndim)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    p_tail = p / 2 if tail == "both" else p
    thr, rft, bonf, res = _pixel_threshold(n, fwhm, p_tail, ndim)
    significant = np.zeros(z.shape, bool)
    for _, m in _tail_maps(z, tail):
        significant |= (m >= thr) & region
    a = np.abs(z) if tail == "both" else (z if tail == "upper" else -z)
    pv = np.minimum(_rft_pmax(a, res), n * stats.norm.sf(a))
    if tail == "both":
        pv = 2 * pv
    pv = np.where(region, np.clip(pv, 0.0, 1.0), 1.0)
    return PixelTest(threshold=float(thr), rft_threshold=float(rft),
                     bonferroni_threshold=float(bonf), significant=significant,
                     p_values=pv, p=p, sigma=sigma, fwhm=fwhm, n_pixels=n,
                     resels=res, tail=tail, warnings=notes)


@dataclass
class Cluster:
    """One connected set of supra-threshold pixels.

    ``peak`` and ``centroid`` are spatial coordinates ((row, col) in 2-D); ``map_index``
    is the index of the map in a stack (empty for a single map); ``sign`` is -1 for a
    cluster of the lower tail; ``mass`` is the sum of ``|z|`` over the cluster.
    """

    size: int
    peak_z: float
    peak: tuple
    centroid: tuple
    mass: float
    p_value: float
    significant: bool
    sign: int = 1
    map_index: tuple = ()

    def to_dict(self):
        return {"size": self.size, "peak_z": self.peak_z, "peak": list(self.peak),
                "centroid": [round(c, 3) for c in self.centroid], "mass": self.mass,
                "p_value": self.p_value, "significant": self.significant,
                "sign": self.sign, "map_index": list(self.map_index)}


@dataclass
class ClusterTest:
    """Result of :func:`cluster_test`.

    Attributes
    ----------
    min_cluster_size : float
        Critical cluster size in pixels.
    threshold : float
        The cluster-forming threshold t_C.
    significant : ndarray of bool, shaped like z
        Pixels of the significant clusters.
    clusters : list of Cluster
        Every cluster, largest first, with its size, peak, centroid and p-value.
    labels : ndarray of int, shaped like z
        Cluster labels (0 = background) per map, numbered as ``clusters`` per map.
    warnings : list of str
        Why random field theory may not be valid here, including a critical size of
        0 px (fewer expected clusters than p: every cluster counts as significant).
    """

    min_cluster_size: float
    threshold: float
    significant: np.ndarray
    clusters: list
    labels: np.ndarray
    p: float
    sigma: float
    fwhm: float
    n_pixels: int
    resels: list
    connectivity: int
    tail: str = "upper"
    warnings: list = field(default_factory=list)

    @property
    def significant_clusters(self):
        return [c for c in self.clusters if c.significant]

    def to_dict(self):
        return {"test": "cluster", "min_cluster_size": self.min_cluster_size,
                "threshold": self.threshold, "p": self.p, "sigma": self.sigma,
                "fwhm": self.fwhm, "n_pixels": self.n_pixels,
                "resels": list(self.resels), "connectivity": self.connectivity,
                "tail": self.tail, "warnings": list(self.warnings),
                "clusters": [c.to_dict() for c in self.clusters]}


def _structure(ndim, connectivity):
    allowed = {1: (2,), 2: (4, 8)}[ndim]
    if ndim == 1 and connectivity in (4, 8):
        connectivity = 2   # neighbours in 1-D are always the two adjacent samples
    if connectivity not in allowed:
        raise ValueError(f"'connectivity' must be one of {list(allowed)} for a {ndim}-D "
                         f"map. {connectivity!r} was provided.")
    rank = 1 if connectivity in (2, 4) else ndim
    return ndimage.generate_binary_structure(ndim, rank)


def _find_clusters(m, region, threshold, structure):
    """Label clusters of ``m >= threshold`` inside ``region``; yield per-cluster stats."""
    labels, n = ndimage.label((m >= threshold) & region, structure=structure)
    if n == 0:
        return labels, []
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(m), labels, idx)
    masses = ndimage.sum_labels(m, labels, idx)
    peaks = ndimage.maximum_position(m, labels, idx)
    peak_z = ndimage.maximum(m, labels, idx)
    cents = ndimage.center_of_mass(np.ones_like(m), labels, idx)
    out = [(int(s), float(pz), tuple(int(v) for v in pk), tuple(float(v) for v in c),
            float(ms)) for s, pz, pk, c, ms in zip(sizes, peak_z, peaks, cents, masses)]
    return labels, out


def cluster_test(z, sigma, p=0.05, *, cluster_threshold=2.7, search_region=None,
                 connectivity=8, tail="upper", ndim=None):
    """Random-field cluster (size) test of a smooth z map (Stat4Ci cluster test).

    Clusters are sets of pixels with ``z >= cluster_threshold`` connected in ``connectivity``
    (8 in 2-D, as MATLAB's ``bwlabel`` default that the toolbox uses). A cluster is
    significant when its size reaches the critical size.

    Parameters
    ----------
    z : ndarray, shape (N,), (H, W) or (..., H, W)
    sigma : float
        Smoothing standard deviation in pixels.
    p : float
        Family-wise error rate (honoured; the toolbox always used .05).
    cluster_threshold : float
        Cluster-forming threshold t_C, in (0, 10] (2.7 in the Stat4Ci demo; >= 2.5
        recommended).
    search_region : ndarray of bool, optional
    connectivity : {4, 8} in 2-D, 2 in 1-D
    tail : {'upper', 'lower', 'both'}
    ndim : {1, 2}, optional

    Returns
    -------
    ClusterTest

    Examples
    --------
    >>> z = np.zeros((256, 256)); z[50:90, 50:90] = 3.0
    >>> res = cluster_test(z, 20)
    >>> round(res.min_cluster_size, 1), res.clusters[0].size, res.clusters[0].significant
    (1218.5, 1600, True)

    References
    ----------
    Chauvin et al. (2005), J. Vis. 5(9):1. :doi:`10.1167/5.9.1`
    """
    threshold = _check_cluster_threshold(cluster_threshold)
    z, region, ndim, n, sigma, p, tail, fwhm, notes = _setup(z, sigma, p, tail,
                                                             search_region, ndim)
    structure = _structure(ndim, connectivity)
    p_tail = p / 2 if tail == "both" else p
    res = resels(n, fwhm, ndim)
    constants = _cluster_constants(fwhm, threshold, ndim)
    kmin = _cluster_size(res, constants, p_tail, ndim)
    if kmin == 0.0:
        expected = res[ndim] * constants[0]
        notes = notes + [f"critical cluster size is 0 px: the region holds only "
                         f"{expected:.3g} expected clusters above t_C {threshold:g}, fewer "
                         f"than p {p_tail:g} allows, so every cluster counts as "
                         "significant; the region is too small for the cluster test at "
                         f"FWHM {fwhm:.1f} px"]
    for note in notes:
        warnings.warn(note, stacklevel=2)
    lead = z.shape[: z.ndim - ndim]
    labels = np.zeros(z.shape, np.int32)
    significant = np.zeros(z.shape, bool)
    clusters = []
    for index in np.ndindex(*lead):
        offset = 0
        for sign, m in _tail_maps(z[index], tail):
            lab, found = _find_clusters(m, region, threshold, structure)
            order = sorted(range(len(found)), key=lambda i: -found[i][0])
            for rank, i in enumerate(order, start=1):
                size, peak_z, peak, cent, mass = found[i]
                pval = min(1.0, _cluster_p(size, res, constants, ndim)
                           * (2 if tail == "both" else 1))
                sig = size >= kmin
                pix = lab == i + 1
                labels[index][pix] = rank + offset
                if sig:
                    significant[index][pix] = True
                clusters.append(Cluster(size=size, peak_z=sign * peak_z, peak=peak,
                                        centroid=cent, mass=mass, p_value=pval,
                                        significant=bool(sig), sign=sign,
                                        map_index=tuple(int(v) for v in index)))
            offset += len(found)
    clusters.sort(key=lambda c: (c.map_index, -c.size))
    return ClusterTest(min_cluster_size=float(kmin), threshold=float(threshold),
                       significant=significant, clusters=clusters, labels=labels, p=p,
                       sigma=sigma, fwhm=fwhm, n_pixels=n, resels=res,
                       connectivity=int(structure.sum() - 1), tail=tail,
                       warnings=notes)

