"""Permutation max-statistic tests of classification images (distribution-free).

The responses are shuffled across trials; every shuffle is one more column of the
(trials x targets) response matrix, so all permutation maps come out of the same sparse
product and separable smoothing as the observed map (:mod:`analysis.ci`). The
permutation distribution of the map maximum gives a family-wise pixel threshold, that of
the largest cluster mass (sum of z over a cluster above the cluster-forming threshold) a
family-wise cluster test. Neither needs smoothness estimates nor Gaussian fields.

References
----------
Nichols, T. E. & Holmes, A. P. (2002). Nonparametric permutation tests for functional
neuroimaging. Human Brain Mapping 15, 1-25. :doi:`10.1002/hbm.1058`

Chauvin, A., Worsley, K. J., Schyns, P. G., Arguin, M. & Gosselin, F. (2005).
Accurate statistical tests for smooth classification images. J. Vis. 5(9):1.
:doi:`10.1167/5.9.1`
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .ci import _bands, _check_responses, _engine, _permutations, as_center_maps
from .stats import Cluster, _check_p, _find_clusters, _structure

__all__ = ["PermutationTest", "permutation_test"]


@dataclass
class PermutationTest:
    """Result of :func:`permutation_test` (max-statistic, family-wise).

    Attributes
    ----------
    z : ndarray
        The observed z map (analytic z of the unpermuted responses).
    pixel_threshold : float
        (1 - p) quantile of the permutation maximum of z over the search region.
    cluster_mass_threshold : float
        (1 - p) quantile of the permutation maximum cluster mass (sum of z over a
        cluster of ``z >= cluster_threshold``; 0 when a permutation has no cluster).
    significant : ndarray of bool
        Pixels with ``z >= pixel_threshold`` in the region.
    cluster_significant : ndarray of bool
        Pixels of clusters whose mass reaches ``cluster_mass_threshold``.
    p_values : ndarray
        Corrected pixel p-values ``(1 + #{max_null >= z}) / (B + 1)``.
    clusters : list of Cluster
        Observed clusters with permutation p-values of their mass.
    max_null, mass_null : ndarray, shape (B,)
        The permutation distributions.
    """

    z: np.ndarray
    pixel_threshold: float
    cluster_mass_threshold: float
    significant: np.ndarray
    cluster_significant: np.ndarray
    p_values: np.ndarray
    clusters: list
    max_null: np.ndarray
    mass_null: np.ndarray
    p: float
    cluster_threshold: float
    n_permutations: int

    def to_dict(self):
        return {"test": "permutation", "pixel_threshold": self.pixel_threshold,
                "cluster_mass_threshold": self.cluster_mass_threshold, "p": self.p,
                "cluster_threshold": self.cluster_threshold,
                "n_permutations": self.n_permutations,
                "n_significant": int(self.significant.sum()),
                "clusters": [c.to_dict() for c in self.clusters]}


def _max_mass(maps, region, threshold, structure):
    """Largest cluster mass of each map in a (B, *space) stack."""
    out = np.zeros(len(maps))
    for b, m in enumerate(maps):
        lab, n = ndimage.label((m >= threshold) & region, structure=structure)
        if n:
            out[b] = ndimage.sum_labels(m, lab, np.arange(1, n + 1)).max()
    return out


def permutation_test(spec, centers, responses, p=0.05, *, method="regression",
                     n_permutations=1000, cluster_threshold=2.7, search_region=None,
                     connectivity=8, seed=0, chunk_size=128, progress=True):
    """Family-wise permutation test of a classification image (max statistic).

    The responses are shuffled across trials ``n_permutations`` times; each shuffle is
    one more column of the (trials x targets) response matrix, so all permutation maps
    come from the same sparse product as the observed one
    (:func:`analysis.classification_image`). The null of the map maximum gives the
    pixel threshold, the null of the largest cluster mass gives the cluster test.
    Distribution-free: it needs neither smoothness nor Gaussianity (upper tail).

    Parameters
    ----------
    spec : BubbleSpec
        Single-scale spec (for a multi-scale spec test each band's centres with a
        single-band spec).
    centers : array, ragged list or csr matrix
        As accepted by :func:`analysis.classification_image`.
    responses : ndarray, shape (n_trials,)
        One observer's responses.
    p : float
    method : {'regression', 'median_split'}
    n_permutations : int
        At least ``1 / p - 1`` (19 for p = .05), since no p-value can fall below
        ``1 / (n_permutations + 1)``.
    cluster_threshold : float
        Cluster-forming z threshold.
    search_region : ndarray of bool, optional
        Defaults to the spec's search region, else the whole image.
    connectivity : {4, 8}
    seed : int or numpy.random.Generator
    chunk_size : int
        Permutation maps computed at once (bounds memory).
    progress : bool

    Returns
    -------
    PermutationTest

    Examples
    --------
    >>> from bubbles import BubbleSpec, sample_centers
    >>> spec = BubbleSpec(shape=(32, 32), sigma=3, n_bubbles=5)
    >>> c = sample_centers(spec, 0, 300)
    >>> r = np.random.default_rng(0).normal(size=300)
    >>> res = permutation_test(spec, c, r, n_permutations=99, progress=False)
    >>> res.max_null.shape
    (99,)

    References
    ----------
    Nichols & Holmes (2002), :doi:`10.1002/hbm.1058`.
    """

    p = _check_p(p)
    least = math.ceil(1 / p - 1 - 1e-9)   # the smallest p-value is 1 / (B + 1)
    if not (isinstance(n_permutations, (int, np.integer)) and n_permutations >= least):
        raise ValueError(f"n_permutations must be an integer >= {least} for p = {p:g} "
                         "(with B permutations no p-value is below 1 / (B + 1)), got "
                         f"{n_permutations!r}")
    if method not in ("regression", "median_split"):
        raise ValueError("'method' must be one of ['regression', 'median_split'] for a "
                         f"permutation test. {method!r} was provided.")
    if spec.multiscale:
        raise ValueError("spec must be single-scale for permutation_test; test each band "
                         "with its own single-band spec")
    maps = as_center_maps(spec, centers)
    r = _check_responses(responses, maps[0].shape[0])
    if r.ndim != 1:
        raise ValueError(f"responses must be 1-D (one observer) for permutation_test, "
                         f"got shape {r.shape}; test each target's column on its own, or "
                         "use classification_image (analytic z) with pixel_test")
    if search_region is not None:
        region = np.asarray(search_region)
        if region.shape != tuple(spec.shape):
            raise ValueError(f"search_region must be a boolean array of the spec's shape "
                             f"{tuple(spec.shape)}, got shape {region.shape}")
        region = region.astype(bool)
    else:
        region = (spec.search_region if spec.search_region is not None
                  else np.ones(spec.shape, bool))
    if not region.any():
        raise ValueError("search_region must contain at least one pixel, got none")
    structure = _structure(2, connectivity)
    perms = _permutations(r, n_permutations, seed)
    bands = _bands(spec, maps)
    obs = _engine(spec, maps, r[:, None], method=method, chunk_size=chunk_size,
                  progress=False, bands=bands)[0][0, 0]
    max_null = np.empty(n_permutations)
    mass_null = np.empty(n_permutations)

    def consume(start, zc):
        zc = zc[:, 0]
        max_null[start:start + len(zc)] = np.where(region, zc, -np.inf).reshape(
            len(zc), -1).max(axis=1)
        mass_null[start:start + len(zc)] = _max_mass(zc, region, cluster_threshold,
                                                     structure)

    _engine(spec, maps, perms, method=method, chunk_size=chunk_size, progress=progress,
            consumer=consume, bands=bands)
    k = int(math.ceil((1 - p) * (n_permutations + 1))) - 1
    k = min(max(k, 0), n_permutations - 1)
    pix_thr = float(np.sort(max_null)[k])
    mass_thr = float(np.sort(mass_null)[k])
    significant = (obs >= pix_thr) & region
    pv = (1 + (max_null[None, :] >= obs.reshape(-1, 1)).sum(axis=1)) / (n_permutations + 1)
    pv = np.where(region, pv.reshape(obs.shape), 1.0)
    lab, found = _find_clusters(obs, region, cluster_threshold, structure)
    clusters = []
    cl_sig = np.zeros(obs.shape, bool)
    for i, (size, peak_z, peak, cent, mass) in enumerate(found):
        sig = mass >= mass_thr
        if sig:
            cl_sig |= lab == i + 1
        clusters.append(Cluster(size=size, peak_z=peak_z, peak=peak, centroid=cent,
                                mass=mass, p_value=float((1 + (mass_null >= mass).sum())
                                                         / (n_permutations + 1)),
                                significant=bool(sig)))
    clusters.sort(key=lambda c: -c.mass)
    return PermutationTest(z=obs, pixel_threshold=pix_thr, cluster_mass_threshold=mass_thr,
                           significant=significant, cluster_significant=cl_sig,
                           p_values=pv, clusters=clusters, max_null=max_null,
                           mass_null=mass_null, p=p, cluster_threshold=cluster_threshold,
                           n_permutations=int(n_permutations))
