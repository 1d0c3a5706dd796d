"""Figures of diagnostic images: z over the mean stimulus, significance contours, bands.

Matplotlib with the Agg canvas and no pyplot: nothing touches global figure state, and
every figure is released after saving.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .diagnostic import DiagnosticImage

__all__ = ["plot_diagnostic_image", "save_diagnostic_png", "draw_map", "plot_montage",
           "plot_comparison", "save_figure"]


def _as_maps(image, target):
    """List of (H, W) band maps and a label per band."""
    if isinstance(image, DiagnosticImage):
        if "target" not in image.dims and target not in (None, 0):
            raise ValueError(f"target must be None for a one-observer image, got {target!r}")
        t = 0 if target is None else int(target)
        if not 0 <= t < image.n_targets:
            raise ValueError(f"target must be in [0, {image.n_targets}), got {target!r}")
        maps = list(image.maps()[t])
        sigmas = image.info.get("sigmas") or (image.spec.sigmas if image.spec else None)
        empty = [k == 0 for k in image.info.get("bubbles_per_trial", [])]
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


def draw_map(ax, m, *, background=None, vmax, alpha=0.6, cmap="RdBu_r"):
    """One panel: the signed map ``m`` in ``[-vmax, vmax]`` over an optional grey
    background (drawn only when it has the map's shape), no ticks. Returns the image
    artist of the map (for a colour bar). The one way a map is drawn over a face: every
    figure of the toolkit (diagnostic images, comparisons, unit montages) calls it."""
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
        im = draw_map(ax, m, background=background, vmax=vmax, alpha=alpha, cmap=cmap)
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
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    fig = plot_diagnostic_image(image, background=background, pixel=pixel,
                                cluster=cluster, target=target, title=title, vmax=vmax)
    return save_figure(fig, path, dpi=dpi)


def plot_montage(maps, names=None, *, background=None, title="", label="z", limit=32):
    """A grid of maps (n, H, W) over ``background``: one large panel with a colour bar,
    or at most ``limit`` panels (the strongest by max |value|), each scaled to its own
    max |value| (the title says so).

    Parameters
    ----------
    maps : ndarray (n, H, W)
    names : list of str, optional
        Panel titles (default '0', '1', ...).
    background : ndarray (H, W) or (n, H, W), optional
        Grey image under every map, or one per map.
    title : str
    label : str
        What the values are (colour bar and scaling note).
    limit : int

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_montage(np.random.default_rng(0).normal(size=(3, 8, 8)))
    >>> len(fig.axes)
    3
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (n, H, W), got {maps.shape}")
    names = [str(n) for n in names] if names is not None else [
        str(i) for i in range(len(maps))]
    if len(names) != len(maps):
        raise ValueError(f"names must name each of the {len(maps)} maps, got {len(names)}")
    bgs = None if background is None else np.asarray(background, dtype=np.float64)
    if bgs is not None and bgs.ndim == 2:
        bgs = np.broadcast_to(bgs, maps.shape)
    keep = np.arange(len(maps))
    if len(maps) > limit:
        keep = np.sort(np.argsort(-np.nanmax(np.abs(maps.reshape(len(maps), -1)),
                                             axis=1))[:limit])
        title += f"\n{limit} of {len(maps)} maps shown: those with the largest max |{label}|"
    if len(keep) > 1:
        title += f"\neach panel scaled to its own max |{label}|"
    ncol = min(8, len(keep))
    nrow = -(-len(keep) // ncol)
    size = (5.0, 5.0) if len(keep) == 1 else (1.7 * ncol, 1.8 * nrow + 0.6)
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, keep):
        m = maps[i]
        v = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
        im = draw_map(ax, m, background=None if bgs is None else bgs[i], vmax=v or 1.0,
                      alpha=0.75)
        ax.set_title(names[i], fontsize=6 if len(keep) > 1 else 9)
        if len(keep) == 1:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)
    fig.suptitle(title, fontsize=8 if len(keep) > 1 else 10)
    fig.tight_layout()
    return fig


PANEL_ORDER = ("human", "model observer", "best unit", "occlusion", "saliency",
               "integrated gradients")


def plot_comparison(panels, *, background=None, titles=None, caption=None):
    """Maps side by side: human, model observer, best unit, occlusion, saliency, IG.

    Parameters
    ----------
    panels : dict
        name -> (H, W) map (a multi-band map shows its band sum). The first entry (the
        reference, e.g. the human map) is drawn first; the others follow PANEL_ORDER,
        unknown names last. Each panel is scaled to its own max |value|.
    background : ndarray (H, W), optional
        Grey image drawn under every map.
    titles : dict, optional
        name -> extra line (e.g. the correlation with the human map).
    caption : str, optional
        A line under the panels (what the colours mean).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> m = np.random.default_rng(0).normal(size=(8, 8))
    >>> len(plot_comparison({"human": m, "best unit": -m}).axes)
    2
    """
    if not panels:
        raise ValueError("panels must hold at least one map")
    rank = {name: i for i, name in enumerate(PANEL_ORDER)}
    first, *rest = panels.items()           # the reference (the human map) stays first
    panels = dict([first] + sorted(rest, key=lambda kv: rank.get(kv[0], len(rank))))
    n = len(panels)
    fig = Figure(figsize=(2.6 * n, 3.4))
    FigureCanvasAgg(fig)
    for i, (name, m) in enumerate(panels.items()):
        m = np.asarray(m, dtype=np.float64)
        while m.ndim > 2:
            m = m.sum(axis=0)
        ax = fig.add_subplot(1, n, i + 1)
        ax.axis("off")
        v = float(np.nanmax(np.abs(m))) or 1.0
        draw_map(ax, m, background=background, vmax=v, alpha=0.7)
        extra = (titles or {}).get(name)
        ax.set_title(name if not extra else f"{name}\n{extra}", fontsize=8)
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.05 if caption else 0, 1, 1))
    return fig


def save_figure(fig, path, *, overwrite=True, dpi=100):
    """Write ``fig`` to ``path`` (folders created) and release it; returns the path.

    An existing file is kept unless ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        fig.clear()
    return path
