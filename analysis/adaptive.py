"""Adaptive bubbles: draw the next trials' centres where the map is still uncertain.

A session runs in blocks of ``update_every`` trials. Block 0 draws its centres uniformly;
before block ``b`` the trials so far give an analytic z map, and block ``b`` draws its
centres from a density ``q_b`` that favours the pixels whose significance is still
undecided, mixed with a uniform floor so that every pixel keeps a probability of at
least ``floor / N`` (``N`` eligible pixels) and the whole image stays mapped.

Regenerable. Every adaptive trial draws its ``k`` centres i.i.d. with replacement from
its block's density with the trial's own stream (:func:`bubbles.sample_centers` with
``density=``), so trial ``t`` is rebuilt from ``(spec, seed, t, q_b)``; and ``q_b`` is a
deterministic function of ``(spec, policy, centres and responses of the trials before
block b)``, computed in float64 under one BLAS thread, so a resumed session or the
analysis replays it from the responses alone. The densities can also be saved
(:func:`save_densities`) and given back as ``recorded``: the replay then checks each
recomputed density against the recorded one and uses the recorded bits.

Unbiased. The analysis weights each centre by ``1 / (N q_b(c))`` (Horvitz & Thompson
1952; :func:`weighted_center_maps`), so a trial's weighted centre map has expected value
``k_t / N`` at every pixel whatever ``q_b`` favoured -- exactly the density that
:func:`analysis.classification_image` centres each trial on. Each pixel of the weighted
regression image is then an unbiased estimate of the uniform-sampling image for an
observer whose response is linear in the centres (for a non-linear observer, such as a
thresholded decision, the expected map also depends on what else the masks revealed,
which the density changes). Within one session the error still leans on the density:
the policy samples more where earlier noise left a pixel near the threshold, and that
noise stays in the sum (it averages out over sessions). Its z *scale* is approximate:
the variance of a weighted pixel is ``~1 / (N q)`` times the uniform one, so
:func:`adaptive_image` offers ``scale='exact'`` (calibrated for pixel and cluster
tests) besides ``scale='map'`` (the unbiased map, the right shape for comparing maps).
A plain z pooled over the session would not do: a pixel whose z drifted toward the
threshold gets more trials, the sampling-to-a-foregone-conclusion that inflates false
positives (its SD was 1.08 under a null observer); 'exact' combines the blocks' own z
maps with fixed weights instead (the inverse normal method of adaptive designs,
Lehmacher & Wassmer 1999). Likelihood-based estimators (``analysis.estimators``) need
no weights: they model the response given the mask, and a design that depends only on
earlier trials leaves that likelihood unchanged.

The policy. The session's z pooled over its trials (about unit variance) says how
likely each pixel's noise-free z lies beyond the decision threshold ``t``:
``P = Phi(z - t)`` (upper tail, the default test; ``|z|`` for both tails). The pixel's
decision is uncertain in proportion to the Bernoulli variance ``P (1 - P)`` (the
straddle idea of Bryan et al. 2005: sample where the confidence interval straddles the
threshold). ``q_b`` is that uncertainty averaged over the response columns, smoothed
with the aperture (normalised, so that the revealed area, not just the centres,
follows it and a flat uncertainty stays uniform up to the edges), restricted to the
search region, rescaled and mixed with the uniform floor. ``t`` defaults to the
corrected pixel-test threshold of the spec (random field theory, p = .05,
:func:`analysis.stats.pixel_threshold`).

What it buys, measured in analysis/ADAPTIVE.md: nothing on the trials needed for a
whole-image map. For an unbiased image the summed variance grows as
``sum_c 1 / q(c)``, smallest for uniform sampling; and bubbles drawn to the diagnostic
regions make a decision observer nearly always correct (no errors left to contrast)
and add the other bubbles' signal to a linear target's noise. Keep ``floor`` high
(default 0.8).

References
----------
Horvitz, D. G. & Thompson, D. J. (1952). A generalization of sampling without
replacement from a finite universe. JASA 47, 663-685.
:doi:`10.1080/01621459.1952.10483446`
Lehmacher, W. & Wassmer, G. (1999). Adaptive sample size calculations in group
sequential trials. Biometrics 55, 1286-1290. :doi:`10.1111/j.0006-341X.1999.01286.x`
Bryan, B., Schneider, J., Nichol, R. C., Miller, C. J., Genovese, C. R. & Wasserman, L.
(2005). Active learning for identifying function threshold boundaries. NIPS 18,
163-170.
Chauvin, A., Worsley, K. J., Schyns, P. G., Arguin, M. & Gosselin, F. (2005).
Accurate statistical tests for smooth classification images. J. Vis. 5(9):1.
:doi:`10.1167/5.9.1`
"""

from __future__ import annotations

import json
import math
import numbers
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy import special

from bubbles import (BubbleSpec, center_maps, one_blas_thread, sample_centers,
                     seed_sequence, sigma_to_fwhm)

from .ci import _check_responses, _kernel_matrix, _weights, classification_image
from .stats import pixel_threshold
from .zscore import zscore

__all__ = ["AdaptivePolicy", "AdaptiveSampler", "AdaptiveRun", "uniform_density",
           "weighted_center_maps", "adaptive_image", "replay", "run_adaptive",
           "save_densities", "load_densities"]

FORMAT = "bubbles.adaptive_densities"
TAILS = ("upper", "lower", "both")
VERSION = 1
SCALES = ("map", "exact")


def _check_spec(spec):
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a bubbles.BubbleSpec, got {type(spec).__name__}")


def _region(spec):
    return (spec.search_region if spec.search_region is not None
            else np.ones(spec.shape, bool))


def uniform_density(spec):
    """The uniform density of ``spec``: ``1 / N`` at each eligible pixel, else 0.

    Returns
    -------
    ndarray of float64, shape (n_bands, H, W)

    Examples
    --------
    >>> from bubbles import BubbleSpec
    >>> q = uniform_density(BubbleSpec(shape=(8, 8), sigma=1, n_bubbles=2))
    >>> q.shape, float(q.sum())
    ((1, 8, 8), 1.0)
    """
    _check_spec(spec)
    region = _region(spec)
    q = region / float(region.sum())
    return np.repeat(q[None], spec.n_bands, axis=0)


# -- the policy ------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass(frozen=True)
class AdaptivePolicy:
    """How an adaptive session chooses the density of its next block of trials.

    Parameters
    ----------
    update_every : int
        Trials per block (>= 1): the density is recomputed before trials
        ``update_every, 2 * update_every, ...``; block 0 is uniform.
    floor : float in (0, 1]
        Share of uniform sampling mixed into every density: each eligible pixel keeps a
        probability of at least ``floor / N``, and a centre's importance weight is at
        most ``1 / floor``. 1 samples uniformly, i.i.d. with replacement (adaptivity
        off); smaller values follow the uncertainty more and make the map noisier
        away from it (0.8, the default, was the least costly setting measured; 0.5
        was far worse, see analysis/ADAPTIVE.md).
    threshold : float, optional
        The z whose crossing is uncertain (> 0). Default: the corrected pixel-test
        threshold of each band (random field theory, p = .05).
    target : int or sequence of int, optional
        The response columns that drive the policy (their uncertainties are
        averaged); default all.
    tail : {'upper', 'lower', 'both'}
        The test the session's map is for, as in :func:`analysis.pixel_test`:
        'upper' (default) is uncertain where ``z`` is near ``+threshold`` (seeing the
        region raises the response), 'both' where ``|z|`` is. With a fixed bubble
        count a strong diagnostic region makes the rest of the map negative (a bubble
        elsewhere is one not on the region), so 'both' also samples those.

    Examples
    --------
    >>> AdaptivePolicy(update_every=40, floor=0.5).block(85)
    2
    >>> AdaptivePolicy(floor=0)                      # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: floor must be a number in (0, 1] (the share of uniform sampling, ...), got 0
    """

    update_every: int = 50
    floor: float = 0.8
    threshold: float | None = None
    target: int | tuple | None = None
    tail: str = "upper"

    def __post_init__(self):
        if not _is_int(self.update_every) or self.update_every < 1:
            raise ValueError(f"update_every must be an integer >= 1 (trials per block), got "
                             f"{self.update_every!r}")
        object.__setattr__(self, "update_every", int(self.update_every))
        f = self.floor
        if (isinstance(f, bool) or not isinstance(f, numbers.Real) or not math.isfinite(f)
                or not 0 < f <= 1):
            raise ValueError("floor must be a number in (0, 1] (the share of uniform "
                             "sampling, which keeps every pixel's probability >= floor / N)"
                             f", got {f!r}")
        object.__setattr__(self, "floor", float(f))
        t = self.threshold
        if t is not None:
            if (isinstance(t, bool) or not isinstance(t, numbers.Real)
                    or not math.isfinite(t) or t <= 0):
                raise ValueError(f"threshold must be None (the corrected pixel-test "
                                 f"threshold) or a z value > 0, got {t!r}")
            object.__setattr__(self, "threshold", float(t))
        g = self.target
        if g is not None:
            many = g if isinstance(g, (list, tuple)) else [g]
            if not many or not all(_is_int(i) and i >= 0 for i in many):
                raise ValueError(f"target must be None (all response columns), a column "
                                 f"index >= 0 or a non-empty list of them, got {g!r}")
            object.__setattr__(self, "target", tuple(int(i) for i in many)
                               if isinstance(g, (list, tuple)) else int(g))
        if self.tail not in TAILS:
            raise ValueError(f"'tail' must be one of {list(TAILS)}. {self.tail!r} was "
                             "provided.")

    def block(self, trial):
        """The block of trial ``trial`` (``trial // update_every``)."""
        return int(trial) // self.update_every

    def to_dict(self):
        target = list(self.target) if isinstance(self.target, tuple) else self.target
        return {"sampling": "adaptive", "update_every": self.update_every,
                "floor": self.floor, "threshold": self.threshold, "target": target,
                "tail": self.tail}

    @classmethod
    def from_dict(cls, d):
        """The policy of :meth:`to_dict` (unknown keys are refused by name)."""
        d = dict(d)
        kind = d.pop("sampling", "adaptive")
        if kind != "adaptive":
            raise ValueError(f"not an adaptive policy: sampling={kind!r}")
        unknown = sorted(set(d) - {"update_every", "floor", "threshold", "target", "tail"})
        if unknown:
            raise ValueError(f"unknown adaptive policy key(s) {unknown}; expected "
                             "update_every, floor, threshold, target, tail")
        return cls(**d)

    def thresholds(self, spec):
        """The |z| threshold of each band (``threshold`` or the pixel-test one)."""
        if self.threshold is not None:
            return [self.threshold] * spec.n_bands
        n = int(_region(spec).sum())
        return [pixel_threshold(n, sigma_to_fwhm(s), 0.05)[0] for s in spec.sigmas]

    def density(self, spec, centers, responses, densities, blocks):
        """The density of the next block from the trials so far.

        Parameters
        ----------
        spec : BubbleSpec
        centers : ndarray or list
            The trials so far, as :func:`bubbles.sample_centers` gives them (one entry
            per band for a multi-scale spec; ragged lists of (k_t, 2) arrays accepted).
        responses : array_like, shape (n,) or (n, n_targets)
        densities : array_like, shape (n_blocks, n_bands, H, W)
            The densities the trials were drawn from.
        blocks : array_like of int, shape (n,)
            Each trial's block (its row of ``densities``).

        Returns
        -------
        ndarray of float64, shape (n_bands, H, W)
            Sums to 1 over the eligible pixels of each band (0 elsewhere), at least
            ``floor / N`` at each of them. Uniform when there are no trials yet.
        """
        _check_spec(spec)
        per_band = _per_trial(spec, centers)
        n = len(per_band[0])
        if n == 0:
            return uniform_density(spec)
        r = _responses(responses, n)
        if self.target is not None:
            cols = self.target if isinstance(self.target, tuple) else (self.target,)
            if max(cols) >= r.shape[1]:
                raise ValueError(f"target {self.target!r} is out of range for "
                                 f"{r.shape[1]} response column(s)")
            r = r[:, list(cols)]
        dens, blocks = _check_design(spec, densities, blocks, n)
        wts = zscore(r, axis=0)
        region = _region(spec)
        n_eligible = float(region.sum())
        out = np.zeros((spec.n_bands,) + tuple(spec.shape))
        maps = weighted_center_maps(spec, centers, dens, blocks)
        maps = maps if spec.multiscale else [maps]
        with one_blas_thread():             # one summation order, on every machine
            for b, thr in enumerate(self.thresholds(spec)):
                geo = _Geometry(spec, b)
                counts = np.array([len(c) for c in per_band[b]], np.float64)
                z = geo.z(maps[b], counts, wts, dens[:, b], blocks)
                z = {"upper": z, "lower": -z, "both": np.abs(z)}[self.tail]
                p = special.ndtr(z - thr)
                u = (p * (1 - p)).mean(axis=0) * region
                # normalised smoothing: a constant uncertainty stays uniform up to the
                # edges (zero padding alone would favour the middle)
                a = _divide(geo.smooth(u), geo.s) * region
                total = a.sum()
                a = a / total if total > 0 and np.isfinite(total) else region / n_eligible
                out[b] = (self.floor / n_eligible) * region + (1 - self.floor) * a
        return out


# -- geometry of one band: the aperture kernel and the exact null variance -------------
class _Geometry:
    """Kernel matrices of one band (float64, zero padding, as the analysis engine)."""

    def __init__(self, spec, band):
        h, w = spec.shape
        sigma = float(spec.sigmas[band])
        self.shape = (h, w)
        self.kh = _kernel_matrix(h, sigma, spec.aperture)
        self.kw = _kernel_matrix(w, sigma, spec.aperture)
        self.kh2, self.kw2 = self.kh * self.kh, self.kw * self.kw
        self.region = _region(spec).astype(np.float64)
        self.n = float(self.region.sum())
        self.s = self.kh @ self.region @ self.kw.T           # sum_c f(x - c)
        self.sign = -1.0 if spec.polarity == "occlude" else 1.0

    def smooth(self, m):
        """``Kh m Kw^T`` for (..., H, W)."""
        return np.matmul(np.matmul(self.kh, m), self.kw.T)

    def variance(self, counts, wts, dens, blocks):
        """Null variance (T, H, W) of ``sum_t w_t (Y_t - k_t s / N)``.

        Trial t's weighted field ``Y_t(x) = sum_c f(x - c) n_t(c) / (N q(c))``, its
        counts multinomial(k_t, q): ``Var Y_t(x) = k_t / N^2 (sum_c f(x-c)^2 / q(c) -
        s(x)^2)``; trials are independent given their densities.
        """
        h, w = self.shape
        nb = dens.shape[0]
        t = wts.shape[1]
        cb = np.zeros((nb, t))
        np.add.at(cb, blocks, wts * wts * counts[:, None])
        cb /= self.n ** 2
        with np.errstate(divide="ignore"):
            invq = np.where(self.region > 0, 1.0 / dens, 0.0).reshape(nb, h * w)
        if t <= nb:
            e = self.smooth2((cb.T @ invq).reshape(t, h, w))
        else:
            e = (cb.T @ self.smooth2(invq.reshape(nb, h, w)).reshape(nb, h * w)).reshape(
                t, h, w)
        return np.maximum(e - cb.sum(axis=0)[:, None, None] * (self.s * self.s), 0.0)

    def smooth2(self, m):
        return np.matmul(np.matmul(self.kh2, m), self.kw2.T)

    def z(self, maps, counts, wts, dens, blocks):
        """Pooled analytic z (T, H, W) from weighted maps (n, H*W), float64.

        The whole sum over its null SD: unit variance when the densities do not depend
        on the responses; the policy's guide to where the map is uncertain.
        """
        h, w = self.shape
        c = np.asarray(maps.T @ wts)                          # (H*W, T)
        num = self.smooth(np.ascontiguousarray(c.T).reshape(-1, h, w))
        num -= (wts.T @ counts / self.n)[:, None, None] * self.s
        return self.sign * _divide(num, np.sqrt(self.variance(counts, wts, dens, blocks)))

    def combined_z(self, maps, counts, wts, dens, blocks):
        """Inverse-normal combination of the blocks' own z maps (T, H, W), float64.

        ``Z = sum_b sqrt(n_b / n) Z_b``: each block's z uses only its trials and its
        density, so under the null it is N(0, 1) whatever the earlier blocks did, and
        the fixed weights keep ``Z`` N(0, 1) although the densities followed the
        responses (Lehmacher & Wassmer 1999).
        """
        out = None
        n = len(blocks)
        for b in np.unique(blocks):
            rows = np.flatnonzero(blocks == b)
            zb = self.z(maps[rows], counts[rows], wts[rows], dens[b:b + 1],
                        np.zeros(len(rows), np.int64))
            zb *= math.sqrt(len(rows) / n)
            out = zb if out is None else out + zb
        return out


def _divide(num, sd):
    ok = sd > 1e-12 * max(float(sd.max(initial=0.0)), 1e-300)
    return np.where(ok, num / np.where(ok, sd, 1.0), 0.0)


# -- inputs ----------------------------------------------------------------------------
def _per_trial(spec, centers):
    """Centres as one list per band of per-trial (k_t, 2) float64 arrays."""
    bands = list(centers) if spec.multiscale else [centers]
    if len(bands) != spec.n_bands:
        raise ValueError(f"centers must have one entry per band ({spec.n_bands}), got "
                         f"{len(bands)}")
    out = []
    for band in bands:
        trials = []
        for c in band:
            a = np.asarray(c, dtype=np.float64)
            if a.size and (a.ndim != 2 or a.shape[1] != 2):
                raise ValueError(f"centers must be (n, k, 2) or a list of (k, 2) arrays, "
                                 f"got a trial of shape {a.shape}")
            trials.append(a.reshape(-1, 2))
        out.append(trials)
    if len({len(b) for b in out}) > 1:
        raise ValueError(f"centers of every band must cover the same trials, got "
                         f"{[len(b) for b in out]}")
    return out


def _responses(responses, n):
    """Responses as a float64 (n, n_targets) array, checked as classification_image does."""
    r = _check_responses(responses, n).astype(np.float64, copy=False)
    return r[:, None] if r.ndim == 1 else r


def _check_design(spec, densities, blocks, n):
    """``densities`` as float64 (n_blocks, n_bands, H, W) and ``blocks`` as int (n,)."""
    h, w = spec.shape
    d = np.asarray(densities, dtype=np.float64)
    if d.ndim == 3 and not spec.multiscale:
        d = d[:, None]
    if d.ndim != 4 or d.shape[1:] != (spec.n_bands, h, w):
        raise ValueError(f"densities must have shape (n_blocks, {spec.n_bands}, {h}, {w}) "
                         f"(one density per block and band), got {d.shape}")
    b = np.asarray(blocks)
    if b.shape != (n,) or (n and (b.dtype.kind not in "iu" or b.min() < 0
                                  or b.max() >= len(d))):
        raise ValueError(f"blocks must hold one integer in [0, {len(d)}) per trial ({n}), "
                         f"got {b.dtype} of shape {b.shape}")
    return d, b.astype(np.int64)


def weighted_center_maps(spec, centers, densities, blocks):
    """Centre maps of adaptive trials, each centre weighted ``1 / (N q_b(c))``.

    Parameters
    ----------
    spec : BubbleSpec
    centers : ndarray or list
        As :func:`bubbles.sample_centers` gives them (ragged lists accepted).
    densities : array_like, shape (n_blocks, n_bands, H, W) (or (n_blocks, H, W))
        The density of each block.
    blocks : array_like of int, shape (n_trials,)
        The block each trial was drawn in.

    Returns
    -------
    scipy.sparse.csr_matrix (n_trials, H * W) float32, or a list per band
        What :func:`analysis.classification_image` takes as ``centers``.

    Examples
    --------
    >>> from bubbles import BubbleSpec, sample_centers
    >>> spec = BubbleSpec(shape=(16, 16), sigma=2, n_bubbles=3)
    >>> q = uniform_density(spec); q[0, :, :8] *= 3
    >>> c = sample_centers(spec, 0, 4, density=q[0])
    >>> m = weighted_center_maps(spec, c, q[None], [0, 0, 0, 0])
    >>> m.shape, sorted({round(float(v), 3) for v in m.data})
    ((4, 256), [0.667, 2.0])
    """
    _check_spec(spec)
    per_band = _per_trial(spec, centers)
    n = len(per_band[0])
    dens, blocks = _check_design(spec, densities, blocks, n)
    maps = [None] * spec.n_bands
    used = np.unique(blocks)
    parts = []
    order = []
    for b in used:
        rows = np.flatnonzero(blocks == b)
        sub = [[band[i] for i in rows] for band in per_band]
        m = center_maps(spec, sub if spec.multiscale else sub[0], density=dens[b])
        parts.append(m if spec.multiscale else [m])
        order.append(rows)
    if not parts:
        empty = sp.csr_matrix((0, spec.shape[0] * spec.shape[1]), dtype=np.float32)
        return [empty] * spec.n_bands if spec.multiscale else empty
    inverse = np.argsort(np.concatenate(order), kind="stable")
    for band in range(spec.n_bands):
        maps[band] = sp.vstack([p[band] for p in parts], format="csr")[inverse]
    return maps if spec.multiscale else maps[0]


# -- the analysis ----------------------------------------------------------------------
def adaptive_image(spec, centers, responses, densities, blocks, method="regression", *,
                   scale="map", **kwargs):
    """Classification image of an adaptive session, corrected for its unequal sampling.

    The centres are weighted ``1 / (N q_b(c))`` (:func:`weighted_center_maps`) and
    passed to :func:`analysis.classification_image`, whose analytic centring on
    ``k_t / N`` then holds for every trial.

    Parameters
    ----------
    spec, centers, densities, blocks
        As for :func:`weighted_center_maps`.
    responses, method
        As for :func:`analysis.classification_image`.
    scale : {'map', 'exact'}
        'map' (default): the engine's z, proportional to the unbiased weighted image
        (use it to compare maps, e.g. correlations with a truth). Its variance is
        ``~1 / (N q)`` times 1 at each pixel, so it is not calibrated for tests: more
        spread where the density was low. 'exact': each block's trials give their own
        z map (each pixel over its null SD for i.i.d. centres drawn from the block's
        density), combined as ``sum_b sqrt(n_b / n) Z_b`` (inverse normal method,
        Lehmacher & Wassmer 1999): N(0, 1) at every pixel under the null although
        the densities followed the responses, what :func:`analysis.pixel_test` and
        :func:`analysis.cluster_test` assume. Its expected shape is effect / SE, which
        leans toward the pixels sampled more. Methods 'regression' and
        'median_split'; costs one smoothing per block and target.
    **kwargs
        Passed to :func:`analysis.classification_image` (``null``, ``targets``,
        ``observer``, ``progress``, ...). ``null='permutation'`` standardises each pixel
        by its own permutation spread (calibrated like 'exact'; the permutations
        ignore that the densities depended on earlier responses, a small effect).

    Returns
    -------
    DiagnosticImage
        ``info['sampling']`` records the correction, the blocks and ``z_scale``.
    """
    if scale not in SCALES:
        raise ValueError(f"'scale' must be one of {list(SCALES)}. {scale!r} was provided.")
    _check_spec(spec)
    per_band = _per_trial(spec, centers)
    n = len(per_band[0])
    dens, blocks = _check_design(spec, densities, blocks, n)
    maps = weighted_center_maps(spec, centers, dens, blocks)
    info = {"kind": "adaptive", "weights": "1 / (N q_b(c)) per centre (Horvitz-Thompson)",
            "n_blocks": int(len(np.unique(blocks))), "z_scale": scale}
    if scale == "map":
        img = classification_image(spec, maps, responses, method, **kwargs)
        info["z_note"] = ("approximate scale: pixel variance ~ 1 / (N q); use "
                          "scale='exact' or null='permutation' for tests")
        img.info["sampling"] = info
        return img
    if method not in ("regression", "median_split"):
        raise ValueError(f"scale='exact' needs method 'regression' or 'median_split', got "
                         f"{method!r}")
    if kwargs.get("null", "analytic") != "analytic":
        raise ValueError("scale='exact' is an analytic z; with null='permutation' use "
                         "scale='map' (the permutations calibrate each pixel)")
    kwargs["keep_raw"] = True
    img = classification_image(spec, maps, responses, method, **kwargs)
    r = _responses(responses, n)
    wts = _weights(r, method)
    z4 = img.maps()
    maps = maps if spec.multiscale else [maps]
    with one_blas_thread():
        for b in range(spec.n_bands):
            geo = _Geometry(spec, b)
            counts = np.array([len(c) for c in per_band[b]], np.float64)
            z4[:, b] = geo.combined_z(maps[b], counts, wts, dens[:, b], blocks)
    info["z_note"] = ("inverse-normal combination of the blocks' z maps, weights "
                      "sqrt(n_b / n): N(0, 1) under the null at every pixel")
    img.info["sampling"] = info
    return img


# -- running and replaying sessions ----------------------------------------------------
def _trial_list(trials):
    """``trials`` (an index or indices) as a list of int >= 0."""
    if _is_int(trials):
        trials = [trials]
    arr = np.asarray(trials if isinstance(trials, np.ndarray) else list(trials))
    if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0):
        raise ValueError(f"trials must be whole numbers >= 0, got {trials!r}")
    return [int(t) for t in arr.ravel()]


class AdaptiveSampler:
    """Draws an adaptive session's centres block by block, trial by trial.

    Call :meth:`centers` for a trial (or several of one block), show them, then
    :meth:`tell` their responses. The density of block ``b`` is computed when its first
    trial is drawn, from every trial before it (all must have been told). A resumed
    session builds a new sampler and calls ``centers`` / ``tell`` for its past trials:
    every centre comes out as it was.

    Parameters
    ----------
    spec : BubbleSpec
        Base spec (a trial with another count uses ``spec.replace(n_bubbles=k)``).
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        Mask seed of the session (see :func:`bubbles.seed_sequence`).
    policy : AdaptivePolicy, optional
    recorded : array_like, shape (n_blocks, n_bands, H, W), optional
        Densities saved by the run (:func:`load_densities`). Each recomputed density is
        checked against its recorded block (relative difference <= ``rtol``; a larger
        one raises ``ValueError``: the responses, spec, policy or code changed) and the
        recorded bits are then used.
    rtol : float
        Tolerance of that check.

    Examples
    --------
    >>> from bubbles import BubbleSpec
    >>> spec = BubbleSpec(shape=(16, 16), sigma=2, n_bubbles=3)
    >>> s = AdaptiveSampler(spec, 7, AdaptivePolicy(update_every=4))
    >>> for t in range(8):
    ...     c = s.centers(t)
    ...     s.tell(t, float(c[0, :, 1].mean() < 8))     # "correct" when left
    >>> s.densities.shape
    (2, 1, 16, 16)
    """

    def __init__(self, spec, seed, policy=None, *, recorded=None, rtol=1e-9):
        _check_spec(spec)
        if policy is None:
            policy = AdaptivePolicy()
        if not isinstance(policy, AdaptivePolicy):
            raise TypeError(f"policy must be an AdaptivePolicy, got {type(policy).__name__}")
        self.spec = spec
        self.seed = seed if isinstance(seed, numbers.Integral) else None
        self.root = seed_sequence(seed)
        self.policy = policy
        self.rtol = float(rtol)
        self.recorded = None
        if recorded is not None:
            rec = np.asarray(recorded, dtype=np.float64)
            self.recorded, _ = _check_design(spec, rec, np.zeros(0, np.int64), 0)
        self._q = []
        self._centers = {}
        self._responses = {}

    @property
    def densities(self):
        """Densities of the blocks drawn so far, (n_blocks, n_bands, H, W) float64."""
        if not self._q:
            return np.zeros((0, self.spec.n_bands) + tuple(self.spec.shape))
        return np.stack(self._q)

    def density(self, block):
        """The density of ``block`` (computed, checked against ``recorded``, kept)."""
        while len(self._q) <= block:
            self._q.append(self._next())
        return self._q[block]

    def _next(self):
        b = len(self._q)
        first = b * self.policy.update_every
        missing = [t for t in range(first) if t not in self._responses]
        if missing:
            raise ValueError(f"block {b} (trials from {first}) is drawn from the responses "
                             f"of trials 0..{first - 1}; tell() the responses of trial(s) "
                             f"{missing[:5]}{' ...' if len(missing) > 5 else ''} first")
        trials = range(first)
        per_band = [[self._centers[t][band] for t in trials]
                    for band in range(self.spec.n_bands)]
        q = self.policy.density(
            self.spec, per_band if self.spec.multiscale else per_band[0],
            np.stack([self._responses[t] for t in trials]) if first else np.zeros(0),
            self.densities, [self.policy.block(t) for t in trials])
        if self.recorded is not None and b < len(self.recorded):
            rec = self.recorded[b]
            diff = float(np.max(np.abs(q - rec)) / max(float(np.max(np.abs(rec))), 1e-300))
            if not diff <= self.rtol:
                raise ValueError(f"the recorded density of block {b} differs from the one "
                                 f"replayed from the responses (max relative difference "
                                 f"{diff:.3g} > rtol {self.rtol:g}): the responses, the spec, "
                                 "the policy or the code changed")
            q = rec
        return q

    def centers(self, trials, n_bubbles=None):
        """Centres of some trials, as :func:`bubbles.sample_centers` returns them.

        ``trials``: an index or indices; ``n_bubbles``: None (the spec's), one count or
        one per trial. The trials' blocks must have their earlier trials told.
        """
        trials = _trial_list(trials)
        counts = self._counts(n_bubbles, len(trials))
        groups = {}
        for i, (t, k) in enumerate(zip(trials, counts)):
            groups.setdefault((self.policy.block(t), k), []).append(i)
        out = [[None] * len(trials) for _ in range(self.spec.n_bands)]
        for (b, k), idx in sorted(groups.items()):
            spec = self.spec if k is None else self.spec.replace(n_bubbles=k)
            c = sample_centers(spec, self.root, [trials[i] for i in idx],
                               density=self.density(b))
            c = c if self.spec.multiscale else [c]
            for band in range(self.spec.n_bands):
                for j, i in enumerate(idx):
                    out[band][i] = c[band][j]
        for i, t in enumerate(trials):
            self._centers[t] = [out[band][i] for band in range(self.spec.n_bands)]
        return _pack(self.spec, out)

    def _counts(self, n_bubbles, n):
        if n_bubbles is None:
            return [None] * n
        if np.ndim(n_bubbles) == 0:
            return [int(n_bubbles)] * n
        k = [int(v) for v in np.asarray(n_bubbles).ravel()]
        if len(k) != n:
            raise ValueError(f"n_bubbles must be one count or one per trial ({n}), got "
                             f"{len(k)}")
        return k

    def tell(self, trials, responses):
        """Record the responses of trials whose centres were drawn (a row per trial)."""
        trials = _trial_list(trials)
        r = np.asarray(responses, dtype=np.float64)
        r = r.reshape(len(trials), -1) if r.ndim <= 1 else r
        if r.shape[0] != len(trials):
            raise ValueError(f"responses must give one row per trial ({len(trials)}), got "
                             f"shape {np.shape(responses)}")
        undrawn = [t for t in trials if t not in self._centers]
        if undrawn:
            raise ValueError(f"tell() got trial(s) {undrawn[:5]} whose centres were not "
                             "drawn by centers() yet")
        if not np.all(np.isfinite(r)):
            raise ValueError(f"responses must be finite, got {r.ravel()[:5].tolist()} for "
                             f"trial(s) {trials[:5]}")
        width = next((np.size(v) for v in self._responses.values()), r.shape[1])
        if r.shape[1] != width:
            raise ValueError(f"responses must have {width} value(s) per trial, as the "
                             f"trials told before, got {r.shape[1]}")
        for t, row in zip(trials, r):
            self._responses[t] = row if row.size > 1 else row[0]

    def run(self):
        """The trials told so far (0..n-1, in order) as an :class:`AdaptiveRun`."""
        n = len(self._responses)
        if sorted(self._responses) != list(range(n)):
            raise ValueError("run() needs the responses of trials 0..n-1 without gaps")
        per_band = [[self._centers[t][band] for t in range(n)]
                    for band in range(self.spec.n_bands)]
        return AdaptiveRun(spec=self.spec, policy=self.policy, seed=self.seed,
                           centers=_pack(self.spec, per_band),
                           responses=np.stack([self._responses[t] for t in range(n)]),
                           densities=self.densities,
                           blocks=np.array([self.policy.block(t) for t in range(n)],
                                           np.int64))


def _pack(spec, per_band):
    """Per-band lists of (k, 2) arrays as (n, k, 2) arrays when k is constant."""
    out = []
    for trials in per_band:
        if len({len(c) for c in trials}) <= 1 and trials:
            out.append(np.stack(trials))
        else:
            out.append(list(trials))
    return out if spec.multiscale else out[0]


@dataclass
class AdaptiveRun:
    """An adaptive session's trials: centres, responses, densities and blocks.

    ``columns`` holds per-trial table columns (simulated sessions), ready for
    ``analysis.TrialTable.from_arrays(run.spec, run.centers, **run.columns)``.
    """

    spec: BubbleSpec
    policy: AdaptivePolicy
    seed: int | None
    centers: object
    responses: np.ndarray
    densities: np.ndarray
    blocks: np.ndarray
    columns: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.blocks)

    def maps(self, n=None):
        """Weighted centre maps of the first ``n`` trials (all by default)."""
        n = len(self) if n is None else int(n)
        c = _per_trial(self.spec, self.centers)
        c = [band[:n] for band in c]
        return weighted_center_maps(self.spec, c if self.spec.multiscale else c[0],
                                    self.densities, self.blocks[:n])

    def image(self, n=None, method="regression", **kwargs):
        """:func:`adaptive_image` of the first ``n`` trials."""
        n = len(self) if n is None else int(n)
        c = [band[:n] for band in _per_trial(self.spec, self.centers)]
        return adaptive_image(self.spec, c if self.spec.multiscale else c[0],
                              self.responses[:n], self.densities, self.blocks[:n],
                              method, **kwargs)


def replay(spec, seed, responses, *, policy=None, n_bubbles=None, recorded=None):
    """Regenerate an adaptive session's centres and densities from its responses.

    Trial ``t``'s centres come from ``(spec, seed, t, q_b)``, ``q_b`` from the responses
    of the trials before block ``b``: exactly what the session drew.

    Parameters
    ----------
    spec : BubbleSpec
    seed : int or numpy.random.SeedSequence
        The session's mask seed.
    responses : array_like, shape (n,) or (n, n_targets)
        Trials 0..n-1, the column(s) the policy used.
    policy : AdaptivePolicy
    n_bubbles : int or sequence of int, optional
        Each trial's bubble count (QUEST); default the spec's.
    recorded : array_like, optional
        Saved densities: checked against the replay and used (see
        :class:`AdaptiveSampler`).

    Returns
    -------
    AdaptiveRun
    """
    r = np.asarray(responses)
    n = len(r)
    sampler = AdaptiveSampler(spec, seed, policy, recorded=recorded)
    counts = sampler._counts(n_bubbles, n)
    u = sampler.policy.update_every
    for start in range(0, n, u):
        stop = min(n, start + u)
        k = counts[start:stop]
        sampler.centers(range(start, stop), None if k[0] is None else k)
        sampler.tell(range(start, stop), r[start:stop])
    return sampler.run()


def run_adaptive(spec, respond, n_trials, seed, *, policy=None, n_bubbles=None):
    """Run an adaptive session with a response function, block by block.

    Parameters
    ----------
    spec : BubbleSpec
    respond : callable
        ``respond(centers, trials) -> responses``: the centres of some consecutive trials
        (as :func:`bubbles.sample_centers` returns them) and their indices; returns one
        response (or row of target responses) per trial. Render the masks with
        :func:`bubbles.render_masks`.
    n_trials : int
    seed : int or numpy.random.SeedSequence
    policy : AdaptivePolicy, optional
    n_bubbles : int, optional
        Bubbles per trial (default the spec's).

    Returns
    -------
    AdaptiveRun

    Examples
    --------
    >>> from bubbles import BubbleSpec, render_masks
    >>> spec = BubbleSpec(shape=(16, 16), sigma=2, n_bubbles=3)
    >>> w = np.zeros((16, 16)); w[4:8, 4:8] = 1.0
    >>> def respond(c, trials):
    ...     return (render_masks(spec, c) * w).sum(axis=(1, 2))
    >>> run = run_adaptive(spec, respond, 60, 1, policy=AdaptivePolicy(update_every=20))
    >>> run.densities.shape, run.image(progress=False).z.shape
    ((3, 1, 16, 16), (16, 16))
    """
    if not (_is_int(n_trials) and n_trials >= 1):
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    if not callable(respond):
        raise TypeError(f"respond must be callable (centers, trials) -> responses, got "
                        f"{type(respond).__name__}")
    sampler = AdaptiveSampler(spec, seed, policy)
    u = sampler.policy.update_every
    for start in range(0, int(n_trials), u):
        trials = np.arange(start, min(int(n_trials), start + u))
        k = n_bubbles if n_bubbles is None or np.ndim(n_bubbles) == 0 else \
            np.asarray(n_bubbles)[trials]          # this block's counts
        c = sampler.centers(trials, k)
        sampler.tell(trials, respond(c, trials))
    return sampler.run()


# -- the densities file ----------------------------------------------------------------
def save_densities(path, densities, policy):
    """Write the densities of an adaptive run to ``path`` (.npz), replacing it atomically.

    The file holds ``densities`` (n_blocks, n_bands, H, W) float64 and the policy (JSON):
    what :func:`load_densities` reads back for :func:`replay` and
    :class:`AdaptiveSampler` (``recorded=``).
    """
    if not isinstance(policy, AdaptivePolicy):
        raise TypeError(f"policy must be an AdaptivePolicy, got {type(policy).__name__}")
    path = Path(path)
    d = np.asarray(densities, dtype=np.float64)
    if d.ndim != 4:
        raise ValueError(f"densities must have shape (n_blocks, n_bands, H, W), got "
                         f"{d.shape}")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, densities=d, format=np.array(FORMAT), version=np.array(VERSION),
                 policy=np.array(json.dumps(policy.to_dict())))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_densities(path):
    """Read a densities file: ``(densities, policy)``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            found = {k: f[k] for k in ("format", "densities", "policy")}
    except (KeyError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{str(path)!r} is not a readable adaptive densities file "
                         f"({exc})") from None
    if str(found["format"]) != FORMAT:
        raise ValueError(f"{str(path)!r} is not an adaptive densities file (format "
                         f"{str(found['format'])!r}, expected {FORMAT!r})")
    return (np.array(found["densities"], dtype=np.float64),
            AdaptivePolicy.from_dict(json.loads(str(found["policy"]))))
