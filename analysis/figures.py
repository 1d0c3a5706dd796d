"""Figures of diagnostic images: z over the mean stimulus, significance contours, bands.

Matplotlib with the Agg canvas and no pyplot: nothing touches global figure state, and
every figure is released after saving.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

__all__ = ["plot_diagnostic_image", "save_diagnostic_png"]


def _as_maps(image, target):
    """List of (H, W) band maps and a label per band."""
    from .diagnostic import DiagnosticImage

    if isinstance(image, DiagnosticImage):
        z = np.asarray(image.z)
        many = image.info.get("responses_ndim") == 2
        multi = image.spec is not None and image.spec.multiscale
        if many:
            t = 0 if target is None else int(target)
            if not 0 <= t < z.shape[0]:
                raise ValueError(f"target must be in [0, {z.shape[0]}), got {target!r}")
            z = z[t]
        sigmas = image.info.get("sigmas") or (image.spec.sigmas if image.spec else None)
        empty = [k == 0 for k in image.info.get("bubbles_per_trial", [])]
        maps = list(z) if multi else [z]
    else:
        z = np.asarray(image, dtype=float)
        if z.ndim == 2:
            maps = [z]
        elif z.ndim == 3:
            maps = list(z)
        else:
            raise ValueError(f"z must have shape (H, W) or (bands, H, W), got {z.shape}")
        sigmas, empty = None, []
    if len(maps) > 1:
        labels = [f"band {b + 1}" + (f" (sigma {sigmas[b]:.3g} px)" if sigmas else "")
                  + (", no bubbles" if b < len(empty) and empty[b] else "")
                  for b in range(len(maps))]
    else:
        labels = [f"sigma {sigmas[0]:.3g} px" if sigmas else ""]
    return maps, labels


def _draw_map(ax, m, *, background=None, vmax, alpha=0.6, cmap="RdBu_r"):
    """One panel: the signed map ``m`` in ``[-vmax, vmax]`` over an optional grey
    background (drawn only when it has the map's shape), no ticks. Returns the image
    artist of the map (for a colour bar). Shared with :func:`analysis.compare.figure`."""
    if background is not None and np.shape(background) == np.shape(m):
        ax.imshow(background, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        alpha = 1.0
    im = ax.imshow(m, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest",
                   alpha=alpha)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _per_band(test, b, n, name):
    """(significant map, test object or None) of band ``b``; (None, None) without test."""
    if test is None:
        return None, None
    if isinstance(test, (list, tuple)):
        if len(test) != n:
            raise ValueError(f"{name} must give one test per band ({n}), got {len(test)}")
        test = test[b]
    obj = test if hasattr(test, "significant") else None
    sig = np.asarray(test.significant if obj is not None else test, bool)
    if sig.ndim == 3 and n > 1:
        sig = sig[b]
    return sig, obj


def _criterion(pix, clu):
    """Panel subtitle with the thresholds of the tests drawn, e.g. 'z >= 3.30, >= 861 px'."""
    parts = []
    if pix is not None and hasattr(pix, "threshold"):
        parts.append(f"pixel z ≥ {pix.threshold:.2f}")
    if clu is not None and hasattr(clu, "min_cluster_size"):
        parts.append(f"cluster ≥ {clu.min_cluster_size:.0f} px")
    text = ", ".join(parts)
    if any(getattr(t, "warnings", None) for t in (pix, clu)):
        text += "\nRFT conditions not met (see warnings)"
    return text


def plot_diagnostic_image(image, *, background=None, pixel=None, cluster=None,
                          target=None, title=None, vmax=None, alpha=0.6, cmap="RdBu_r"):
    """Draw a diagnostic image: one panel per band, z colour bar, significance contours.

    Parameters
    ----------
    image : DiagnosticImage or ndarray
        (H, W) or (bands, H, W) z map; a many-target image shows ``target``.
    background : ndarray (H, W), optional
        Mean stimulus (grey, [0, 1]) drawn under the z map.
    pixel, cluster : PixelTest / ClusterTest, bool ndarray, or a list of them, optional
        Significant pixels are outlined in solid (pixel test) and dashed (cluster test)
        black contours; a list gives one test per band. The thresholds of test objects
        are written under each panel's title, and a caption says what the contours are.
    target : int, optional
    title : str, optional
    vmax : float, optional
        Colour range is ``[-vmax, vmax]`` z (default: max |z|, at least 3).
    alpha : float
        Opacity of the z map over the background.
    cmap : str

    Returns
    -------
    matplotlib.figure.Figure
        Not registered with pyplot; save it with ``fig.savefig`` (or use
        :func:`save_diagnostic_png`).

    Examples
    --------
    >>> fig = plot_diagnostic_image(np.random.default_rng(0).normal(size=(32, 32)))
    >>> len(fig.axes)
    2
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps, labels = _as_maps(image, target)
    if background is not None:
        background = np.asarray(background, dtype=float)
        if background.shape != maps[0].shape:
            raise ValueError(f"background must have the map's shape {maps[0].shape}, got "
                             f"{background.shape}")
    top = max(float(np.nanmax(np.abs(m))) for m in maps)
    vmax = float(vmax) if vmax is not None else max(3.0, top)
    n = len(maps)
    width = 3.2 * n + 0.8
    fig = Figure(figsize=(width, 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    im = None
    p_values = set()
    for b, (ax, m, label) in enumerate(zip(axes, maps, labels)):
        im = _draw_map(ax, m, background=background, vmax=vmax, alpha=alpha, cmap=cmap)
        tests = {}
        for name, test, style in (("pixel", pixel, "solid"), ("cluster", cluster, "dashed")):
            sig, tests[name] = _per_band(test, b, n, name)
            if tests[name] is not None:
                p_values.add(tests[name].p)
            if sig is not None and sig.any() and sig.shape == m.shape:
                ax.contour(sig.astype(float), levels=[0.5], colors="k",
                           linewidths=1.2, linestyles=style)
        ax.set_title("\n".join(t for t in (label, _criterion(tests["pixel"],
                                                              tests["cluster"])) if t),
                     fontsize=8)
    cbar = fig.colorbar(im, ax=list(axes), shrink=0.85)
    cbar.set_label("z")
    if title:
        fig.suptitle(textwrap.fill(title, int(width * 11)), fontsize=10)
    if pixel is not None or cluster is not None:
        drawn = [w for w, t in (("solid: pixel test", pixel), ("dashed: cluster test",
                                                                  cluster)) if t is not None]
        p_txt = f" (p = {p_values.pop():g}, family-wise)" if len(p_values) == 1 else ""
        fig.supxlabel(", ".join(drawn) + p_txt, fontsize=7)
    return fig


def save_diagnostic_png(image, path, *, background=None, pixel=None, cluster=None,
                        target=None, title=None, vmax=None, overwrite=True, dpi=100):
    """Draw with :func:`plot_diagnostic_image` and write a PNG; returns the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    fig = plot_diagnostic_image(image, background=background, pixel=pixel,
                                cluster=cluster, target=target, title=title, vmax=vmax)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        fig.clear()
    return path
