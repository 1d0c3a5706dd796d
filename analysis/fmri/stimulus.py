"""The stimulus side seen from the scanner: analysis resolution, revealed area, face ROIs.

Voxel images are computed at a coarse resolution (64 pixels on the long side by
default): every length of the spec is scaled by ``f = resolution / max(H, W)``.
The image shape becomes ``round(H f) x round(W f)``; the aperture sigma becomes
``sigma f`` (so the bubbles cover the same fraction of the face, and the FWHM used by
the random-field tests is the scaled one); each centre ``c`` (pixel row, column)
becomes ``(c + 0.5) f - 0.5`` (pixel centres map onto pixel centres), rounded to the
nearest coarse pixel by :func:`bubbles.center_maps`; the search region becomes the
coarse pixels whose area is at least half inside it; the number of bubbles is kept
(two centres of a trial that fall in one coarse pixel add up there).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from bubbles import BubbleSpec, face_set, load_source, render_masks

__all__ = ["analysis_spec", "scale_centers", "revealed_area", "stimulus_rois",
           "resize_map"]


def _factor(spec, resolution):
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) \
            or resolution < 8:
        raise ValueError(f"resolution must be an integer >= 8 pixels (the long side of "
                         f"the voxel images), got {resolution!r}")
    return min(1.0, resolution / max(spec.shape))


def resize_map(m, shape, *, order=1):
    """``m`` (H, W) resampled to ``shape`` by spline interpolation of ``order``
    (block means when shrinking by a whole factor)."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape == tuple(shape):
        return m
    fy, fx = m.shape[0] / shape[0], m.shape[1] / shape[1]
    if fy == fx and float(fy).is_integer() and fy > 1:
        k = int(fy)
        return m.reshape(shape[0], k, shape[1], k).mean(axis=(1, 3))
    return ndimage.zoom(m, (shape[0] / m.shape[0], shape[1] / m.shape[1]), order=order,
                        grid_mode=True, mode="nearest")


def analysis_spec(spec, resolution=64):
    """The spec of the voxel images and the scale factor ``f`` (see module docstring).

    Examples
    --------
    >>> s, f = analysis_spec(BubbleSpec(shape=(256, 192), sigma=12, n_bubbles=10), 64)
    >>> s.shape, s.sigma, f
    ((64, 48), 3.0, 0.25)
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a bubbles.BubbleSpec, got {type(spec).__name__}")
    f = _factor(spec, resolution)
    if f == 1.0:
        return spec, 1.0
    shape = tuple(max(1, int(round(s * f))) for s in spec.shape)
    region = None
    if spec.search_region is not None:
        region = resize_map(spec.search_region.astype(float), shape) >= 0.5
    sigma = (tuple(s * f for s in spec.sigma) if isinstance(spec.sigma, tuple)
             else spec.sigma * f)
    return spec.replace(shape=shape, sigma=sigma, search_region=region), f


def scale_centers(centers, factor):
    """Per-trial (k, 2) centres mapped to the coarse grid (``(c + 0.5) f - 0.5``)."""
    return [(np.asarray(c, dtype=np.float64) + 0.5) * factor - 0.5 for c in centers]


def revealed_area(spec, centers, *, chunk_size=256):
    """Fraction of the image each trial's mask reveals (mean of the mask), (n,).

    Rendered with ``spec`` (use the analysis spec and scaled centres: the fraction is
    the same to within the coarse sampling).
    """
    out = np.empty(len(centers))
    for start in range(0, len(centers), chunk_size):
        m = render_masks(spec, centers[start:start + chunk_size])
        out[start:start + len(m)] = m.reshape(len(m), -1).mean(axis=1)
    return out


def stimulus_rois(table, shape):
    """Boolean stimulus ROIs (name -> (H, W) at ``shape``) of the session's stimuli.

    From the session's stimulus set when its sidecar names one that has ROI masks
    (the embedded faces do: 'eyes', 'brows', 'nose', 'mouth'; a pixel is in a ROI when
    it is in at least half of the shown images' masks); otherwise the ROIs of the
    embedded face set resized to the spec, with a ``UserWarning`` (the session's
    images are then assumed to be aligned faces like them).
    """
    rois = None
    stim = ((table.sidecar or {}).get("config") or {}).get("stimuli") or {}
    source = stim.get("source")
    if source:
        base = table.path.parent if getattr(table, "path", None) is not None else None
        try:
            s = load_source(source, n_identities=stim.get("n_identities", 20),
                            size=stim.get("size", 256),
                            expressions=stim.get("expressions"), base_dir=base)
        except (OSError, ValueError):
            s = None
        if s is not None and s.rois:
            shown = np.ones(len(s), bool)
            if "stimulus_id" in table.data:
                ids = set(table.data["stimulus_id"].astype(str))
                hit = s.table["stimulus_id"].astype(str).isin(ids).to_numpy()
                shown = hit if hit.any() else shown
            rois = {k: v[shown].mean(axis=0) for k, v in s.rois.items()}
    if rois is None:
        if source is not None or table.sidecar:
            warnings.warn("the session's stimuli have no ROI masks; the ROIs of the "
                          "embedded face set (bubbles.face_set) are used, resized to the "
                          "spec", stacklevel=2)
        size = max(64, max(table.spec.shape))
        s = face_set(4, size=size, expressions=("neutral",))
        rois = {k: v.mean(axis=0) for k, v in s.rois.items()}
        h, w = table.spec.shape
        side = max(h, w)               # the square face fitted to the long side, centred
        rois = {k: resize_map(v, (side, side)) for k, v in rois.items()}
        y0, x0 = (side - h) // 2, (side - w) // 2
        rois = {k: v[y0:y0 + h, x0:x0 + w] for k, v in rois.items()}
    return {k: resize_map(v, shape) >= 0.5 for k, v in rois.items()}
