"""z-scores: the one standardisation of the toolkit.

Every place that turns values into z units calls :func:`zscore`: response weights of a
regression image (over trials), a proportion plane (over the search region), a raw
classification image (over the pixels outside the search region, the Stat4Ci demo), maps
before a Pearson correlation, attribution maps (over pixels). Which values give the mean
and SD is the caller's choice (``axis``, ``where``); ``ddof`` says how the SD is taken.

Conventions: the sample SD (``ddof=1``, MATLAB's ``std``) wherever a published tool is
matched (Stat4Ci z-scores with it) or a map is standardised for display or testing;
``ddof=0`` where the z-scores feed a correlation (``r = mean(z_a * z_b)`` needs the
population SD) or a weighted sum whose scale cancels (the regression weights). A
constant slice has no spread: its z-scores are 0, never NaN or inf.
"""

from __future__ import annotations

import numpy as np

__all__ = ["zscore"]


def zscore(x, axis=-1, *, ddof=0, where=None, omit_nan=False):
    """Standardise ``x`` along ``axis`` with the mean and SD of the selected values.

    Parameters
    ----------
    x : array_like
        float32 stays float32; anything else becomes float64.
    axis : int or tuple of int
        The axes whose values give one mean and one SD (e.g. ``(-2, -1)`` for the pixels
        of each map of a stack).
    ddof : {0, 1}
        Delta degrees of freedom of the SD.
    where : bool array_like, optional
        Broadcasts to ``x``: only these values give the mean and SD (e.g. a search
        region); every value of ``x`` is standardised.
    omit_nan : bool
        Leave NaN values out of the mean and SD (they stay NaN in the result).

    Returns
    -------
    ndarray
        Shaped like ``x``; 0 where the selected values are constant (or fewer than
        ``ddof + 1``).

    Examples
    --------
    >>> zscore([1.0, 2.0, 3.0], ddof=1)
    array([-1.,  0.,  1.])
    >>> zscore([[1.0, 1.0], [0.0, 2.0]], axis=1)
    array([[ 0.,  0.],
           [-1.,  1.]])
    """
    x = np.asarray(x)
    x = x if x.dtype == np.float32 else x.astype(np.float64)
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")
    sel = None
    if where is not None:
        sel = np.broadcast_to(np.asarray(where, bool), x.shape)
    if omit_nan:
        finite = ~np.isnan(x)
        sel = finite if sel is None else sel & finite
    kw = {} if sel is None else {"where": sel}
    with np.errstate(invalid="ignore", divide="ignore"):
        count = (np.sum(sel, axis=axis, keepdims=True) if sel is not None
                 else np.prod([x.shape[a] for a in np.atleast_1d(axis)]))
        mu = np.mean(x, axis=axis, keepdims=True, **kw)
        var = np.mean(np.square(x - mu), axis=axis, keepdims=True, **kw)
        var = var * count / np.maximum(count - ddof, 1)
    ok = (count > ddof) & (var > 0) & np.isfinite(var)
    sd = np.sqrt(np.where(ok, var, 1)).astype(x.dtype, copy=False)
    mu = np.where(ok, mu, 0).astype(x.dtype, copy=False)
    return np.where(ok, (x - mu) / sd, np.zeros((), x.dtype))
