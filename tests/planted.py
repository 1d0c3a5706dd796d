"""A planted observer of a small region, shared by the comparison tests."""

import numpy as np
from scipy.ndimage import gaussian_filter

from bubbles import BubbleSpec, sample_centers

SPEC = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=6)
REGION = (slice(8, 14), slice(18, 26))


def region_observer(n, seed=4, region=REGION, noise=0.5):
    """Centres of ``n`` trials of SPEC and responses that depend on how much of a region
    the bubbles reveal."""
    c = sample_centers(SPEC, seed, n)
    rng = np.random.default_rng(seed)
    rows, cols = c[..., 0], c[..., 1]
    hit = ((rows >= region[0].start - 2) & (rows < region[0].stop + 2)
           & (cols >= region[1].start - 2) & (cols < region[1].stop + 2)).sum(axis=1)
    correct = (hit + noise * rng.normal(size=n) > 0.5).astype(float)
    return c, correct


def planted_map():
    """The region, smoothed with the bubble sigma: what the observer's map converges to."""
    m = np.zeros((32, 32))
    m[REGION] = 1.0
    return gaussian_filter(m, 3)
