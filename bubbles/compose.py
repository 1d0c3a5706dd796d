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

from .spec import BubbleSpec

__all__ = ["apply_bubbles", "laplacian_bands", "compose_multiscale", "bubble_stimuli"]


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


def _background(image, background, rng):
    """Background value or array for :func:`apply_bubbles`."""
    if isinstance(background, str):
        mean = image.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)
        if background == "mean":
            return mean
        if background == "noise":
            if rng is None:
                raise ValueError("background='noise' needs rng (a seed or a "
                                 "numpy.random.Generator) so the noise is reproducible")
            rng = np.random.default_rng(rng)
            noise = rng.standard_normal(image.shape).astype(np.float32)
            return np.clip(mean + image.std() * noise, 0.0, 1.0)
        raise ValueError(f"background must be 'mean', 'noise' or a grey level in [0, 1], "
                         f"got {background!r}")
    value = float(background)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"background must be 'mean', 'noise' or a grey level in [0, 1], "
                         f"got {background!r}")
    return np.float32(value)


def apply_bubbles(image, mask, background="mean", *, rng=None):
    """Show ``image`` through ``mask`` on a background.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C), values in [0, 1]
    mask : ndarray, shape (H, W) or (n, H, W), values in [0, 1]
        1 = image visible, 0 = background.
    background : 'mean', 'noise' or float
        The image's mean grey (per channel), Gaussian noise of the image's SD around it
        (needs ``rng``), or a fixed grey level in [0, 1].
    rng : int or numpy.random.Generator, optional
        Only for ``background='noise'``.

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
        raise ValueError("mask values must lie in [0, 1]")
    bg = _background(image, background, rng)
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
    if isinstance(n_bands, bool) or int(n_bands) != n_bands or n_bands < 1:
        raise ValueError(f"n_bands must be an integer >= 1, got {n_bands!r}")
    if base_sigma <= 0:
        raise ValueError(f"base_sigma must be > 0 pixels, got {base_sigma}")
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


def bubble_stimuli(image, spec, masks, *, bands=None, rng=None):
    """Stimuli for rendered masks, single- or multi-scale alike.

    Parameters
    ----------
    image : ndarray, shape (H, W), values in [0, 1]
    spec : BubbleSpec
        Gives the background (single scale) or the number of bands (multi-scale).
    masks : ndarray
        From :func:`bubbles.render_masks` with the same spec: (n, H, W) or
        (n, bands, H, W).
    bands : ndarray, optional
        Precomputed :func:`laplacian_bands` of ``image`` (saves time per trial).
    rng : int or Generator, optional
        For ``background='noise'``.

    Returns
    -------
    stimuli : ndarray of float32, shape (n, H, W)
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a BubbleSpec, got {type(spec).__name__}")
    if np.shape(image)[:2] != spec.shape:
        raise ValueError(f"image shape {np.shape(image)[:2]} does not match spec.shape "
                         f"{spec.shape}")
    if not spec.multiscale:
        return apply_bubbles(image, masks, spec.background, rng=rng)
    if bands is None:
        bands = laplacian_bands(image, spec.n_bands)
    return compose_multiscale(bands, masks)
