"""Putting masks on images: single-scale bubbling and multi-scale composition.

Single scale: ``stim = bg + mask * (image - bg)`` (Gosselin & Schyns 2001), a convex
combination, so the result stays in [0, 1].

Multi-scale: the image is split into one-octave spatial-frequency bands by a
full-resolution Laplacian (difference-of-Gaussians) pyramid plus a low-pass residual;
each band is multiplied by its own mask and the residual is always shown:
``stim = residual + sum_k mask_k * band_k``. The bands sum back exactly to the image, so
an all-ones mask returns the image.

References
----------
Gosselin, F. & Schyns, P. G. (2001). Bubbles. Vision Research 41, 2261-2271.
:doi:`10.1016/S0042-6989(01)00097-9`
Burt, P. J. & Adelson, E. H. (1983). The Laplacian pyramid as a compact image code.
IEEE Trans. Communications 31, 532-540. :doi:`10.1109/TCOM.1983.1095851`
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .masks import _trial_indices, seed_sequence, trial_rng
from .spec import BubbleSpec, _is_number, _whole

__all__ = ["apply_bubbles", "laplacian_bands", "compose_multiscale", "bubble_stimuli",
           "noise_background", "background_levels"]


def _check_image(image, name="image"):
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (H, W, C), got {image.shape}")
    if image.size == 0 or not np.all(np.isfinite(image)):
        raise ValueError(f"{name} must be a non-empty array of finite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"{name} values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return image


def noise_background(image, seed, trials):
    """Noise backgrounds for some trials of a seeded run, one field per trial.

    Trial ``t``'s field is Gaussian noise of the image's SD around its mean grey, clipped
    to [0, 1], drawn from ``SeedSequence(seed, spawn_key=(t, 1))``: like the trial's
    centres (spawn key ``(t,)``) it depends only on ``(seed, t)`` and is regenerable alone.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C), values in [0, 1]
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        The run's seed, as given to :func:`bubbles.sample_centers`
        (:func:`bubbles.masks.seed_sequence`).
    trials : int or iterable of int
        A count ``n`` (trials ``0 .. n-1``) or the trial indices.

    Returns
    -------
    noise : ndarray of float32, shape (n, H, W) (plus C for a colour image)
    """
    image = _check_image(image)
    trials = _trial_indices(trials)
    root = seed_sequence(seed)
    mean = background_levels(image[None], "noise")[0]
    sd = np.float32(image.std())
    out = np.empty((len(trials),) + image.shape, np.float32)
    for i, t in enumerate(trials):
        rng = trial_rng(root, t, stream=1)
        out[i] = mean + sd * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


def background_levels(images, background):
    """Grey level of the hidden parts of each image's bubbled stimuli.

    The one definition of the grey that fills what the bubbles hide, used by
    :func:`apply_bubbles`, the simulated observers (which subtract it before matching)
    and the network probe: for ``'mean'`` each image's own mean grey (float64 mean,
    rounded to float32), for a number that grey level for every image, for ``'noise'``
    each image's mean (the noise is centred on it).

    Parameters
    ----------
    images : ndarray (n, H, W) or (n, H, W, C), values in [0, 1]
    background : 'mean', 'noise' or float in [0, 1]

    Returns
    -------
    ndarray of float32, shape (n,) (or (n, C) for colour images)

    Examples
    --------
    >>> background_levels(np.full((2, 4, 4), 0.25), "mean")
    array([0.25, 0.25], dtype=float32)
    """
    images = np.asarray(images)
    if isinstance(background, str):
        if background not in ("mean", "noise"):
            raise ValueError(f"background must be 'mean', 'noise' or a grey level in "
                             f"[0, 1], got {background!r}")
        return images.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)
    if not _is_number(background) or not 0.0 <= float(background) <= 1.0:
        raise ValueError(f"background must be 'mean', 'noise' or a grey level in [0, 1], "
                         f"got {background!r}")
    return np.full(images.shape[:1] + images.shape[3:], float(background), np.float32)


def _background(image, background, n_masks):
    """Background value or array for :func:`apply_bubbles`."""
    message = ("background must be 'mean', a grey level in [0, 1] or an array of noise "
               f"fields from noise_background(), got {background!r}")
    if isinstance(background, str):
        if background == "mean":
            return background_levels(image[None], "mean")[0]
        if background == "noise":
            raise ValueError("background='noise' needs the noise fields: pass "
                             "noise_background(image, seed, trials) as background (or "
                             "use bubble_stimuli with seed and trials)")
        raise ValueError(message)
    if np.ndim(background) == 0:
        value = float(background)
        if not 0.0 <= value <= 1.0:
            raise ValueError(message)
        return np.float32(value)
    bg = np.asarray(background, dtype=np.float32)
    if bg.shape not in (image.shape, (n_masks,) + image.shape):
        raise ValueError(f"a background array must have the image's shape {image.shape} "
                         f"or one field per mask {(n_masks,) + image.shape}, got {bg.shape}")
    return bg


def apply_bubbles(image, mask, background="mean"):
    """Show ``image`` through ``mask`` on a background.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C), values in [0, 1]
    mask : ndarray, shape (H, W) or (n, H, W), values in [0, 1]
        1 = image visible, 0 = background.
    background : 'mean', float or ndarray
        The image's mean grey (per channel), a fixed grey level in [0, 1], or an array:
        one field for every mask (image-shaped) or one per mask, e.g. the noise of
        :func:`noise_background`.

    Returns
    -------
    stimulus : ndarray of float32, shape of ``mask`` (plus C), in [0, 1]

    Examples
    --------
    >>> img = np.full((4, 4), 0.8, np.float32)
    >>> apply_bubbles(img, np.zeros((4, 4)), background=0.5)[0, 0]
    np.float32(0.5)
    """
    image = _check_image(image)
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape[-2:] != image.shape[:2] or mask.ndim not in (2, 3):
        raise ValueError(f"mask must have shape (H, W) or (n, H, W) with (H, W) = "
                         f"{image.shape[:2]}, got {mask.shape}")
    if mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"mask values must lie in [0, 1], got [{mask.min():.4g}, "
                         f"{mask.max():.4g}]")
    bg = _background(image, background, mask.shape[0] if mask.ndim == 3 else 1)
    if image.ndim == 3:
        mask = mask[..., None]
    stim = bg + mask * (image - bg)
    return np.clip(stim, 0.0, 1.0, out=stim)


def laplacian_bands(image, n_bands, *, base_sigma=1.0):
    """Split an image into one-octave bands plus a low-pass residual.

    A full-resolution Laplacian (difference-of-Gaussians) pyramid: with
    ``G_0 = image`` and ``G_k`` the image blurred with ``sigma = base_sigma * 2**(k-1)``
    pixels, band ``k`` is ``G_k - G_{k+1}`` (finest first) and the residual is
    ``G_n``. The bands sum back to the image up to float rounding.

    Parameters
    ----------
    image : ndarray, shape (H, W), values in [0, 1]
    n_bands : int
        Number of band-pass levels (5 in the 2001 design).
    base_sigma : float
        Blur of the first low-pass level in pixels.

    Returns
    -------
    bands : ndarray of float32, shape (n_bands + 1, H, W)
        Band-pass levels, finest first, then the residual. Edges are reflected (no zero
        padding, which would darken them).

    Examples
    --------
    >>> img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    >>> b = laplacian_bands(img, 3)
    >>> bool(np.abs(b.sum(axis=0) - img).max() < 1e-5)
    True
    """
    image = _check_image(image)
    if image.ndim != 2:
        raise ValueError(f"image must be grey (H, W) for a pyramid, got {image.shape}")
    if _whole(n_bands) is None or n_bands < 1:
        raise ValueError(f"n_bands must be an integer >= 1, got {n_bands!r}")
    if isinstance(base_sigma, (bool, str)) or not base_sigma > 0 or not np.isfinite(base_sigma):
        raise ValueError(f"base_sigma must be > 0 pixels, got {base_sigma!r}")
    levels = [image.astype(np.float64)]
    for k in range(int(n_bands)):
        levels.append(gaussian_filter(levels[0], base_sigma * 2.0 ** k, mode="reflect"))
    bands = [levels[k] - levels[k + 1] for k in range(int(n_bands))] + [levels[-1]]
    return np.stack(bands).astype(np.float32)


def compose_multiscale(bands, masks):
    """Multi-scale bubbles stimulus: each band times its mask, plus the residual.

    Parameters
    ----------
    bands : ndarray, shape (n_bands + 1, H, W)
        From :func:`laplacian_bands` (compute it once per image).
    masks : ndarray, shape (n_bands, H, W) or (n, n_bands, H, W), values in [0, 1]

    Returns
    -------
    stimulus : ndarray of float32, shape (H, W) or (n, H, W), clipped to [0, 1]
    """
    bands = np.asarray(bands, dtype=np.float32)
    masks = np.asarray(masks, dtype=np.float32)
    n_bands = bands.shape[0] - 1
    if bands.ndim != 3 or n_bands < 1:
        raise ValueError(f"bands must have shape (n_bands + 1, H, W), got {bands.shape}")
    if masks.shape[-3:] != (n_bands,) + bands.shape[1:] or masks.ndim not in (3, 4):
        raise ValueError(f"masks must have shape ({n_bands}, H, W) or (n, {n_bands}, H, W) "
                         f"to match bands {bands.shape}, got {masks.shape}")
    flat = masks.reshape(-1, n_bands, bands[0].size)
    stim = np.einsum("nbp,bp->np", flat, bands[:-1].reshape(n_bands, -1))
    stim += bands[-1].ravel()
    np.clip(stim, 0.0, 1.0, out=stim)
    return stim.reshape(masks.shape[:-3] + bands.shape[1:])


def bubble_stimuli(spec, image, masks, *, bands=None, seed=None, trials=None):
    """Stimuli for rendered masks, single- or multi-scale alike.

    Parameters
    ----------
    spec : BubbleSpec
        Gives the background (single scale) or the number of bands (multi-scale).
    image : ndarray, shape (H, W), values in [0, 1]
    masks : ndarray
        From :func:`bubbles.render_masks` with the same spec: (n, H, W) or
        (n, bands, H, W).
    bands : ndarray, optional
        Precomputed :func:`laplacian_bands` of ``image`` (saves time per trial).
    seed : int, numpy.random.SeedSequence or numpy.random.Generator, optional
        The run's seed, needed with ``trials`` for ``background='noise'`` (one
        regenerable noise field per trial, :func:`noise_background`).
    trials : sequence of int, optional
        The masks' trial indices.

    Returns
    -------
    stimuli : ndarray of float32, shape (n, H, W)

    Examples
    --------
    >>> from bubbles import render_masks, sample_centers
    >>> spec = BubbleSpec(shape=(32, 32), sigma=3, n_bubbles=4, background=0.5)
    >>> masks = render_masks(spec, sample_centers(spec, 0, 2))
    >>> bubble_stimuli(spec, np.full((32, 32), 0.9), masks).shape
    (2, 32, 32)
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a BubbleSpec, got {type(spec).__name__} (the spec "
                        f"comes first: bubble_stimuli(spec, image, masks))")
    if np.shape(image)[:2] != spec.shape:
        raise ValueError(f"image shape {np.shape(image)[:2]} does not match spec.shape "
                         f"{spec.shape}")
    if spec.multiscale:
        if bands is None:
            bands = laplacian_bands(image, spec.n_bands)
        return compose_multiscale(bands, masks)
    background = spec.background
    if background == "noise":
        if seed is None or trials is None:
            raise ValueError("spec.background='noise' needs seed and trials (the noise "
                             "of trial t is regenerated from (seed, t))")
        trials = list(trials)
        if len(trials) != len(masks):
            raise ValueError(f"trials must give one index per mask ({len(masks)}), got "
                             f"{len(trials)}")
        background = noise_background(image, seed, trials)
    return apply_bubbles(image, masks, background)
