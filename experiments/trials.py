"""Trial planning and stimulus building: everything a session decides before drawing.

Pure numpy (no psychopy), so the same code serves the window session, the headless
presenter and the benchmark:

- :func:`session_seeds` derives the trial-order seed and the mask seed from the base
  seed, the participant and the session number;
- :func:`key_mapping` assigns response keys to labels, counterbalanced across
  participants (a rotation picked from the participant number and the seed);
- :func:`trial_plan` lists the stimulus of every trial (practice then main), balanced:
  every stimulus once, in a fresh random order, before any repeats;
- :class:`StimulusBuilder` makes trial ``t``'s bubbled image from
  ``(spec.replace(n_bubbles=k), mask_seed, mask_index)``, multi-scale included, with the
  Laplacian bands of every image computed once.
"""

from __future__ import annotations

import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from bubbles import (BubbleSpec, bubble_stimuli, laplacian_bands, load_source,
                     render_masks, sample_centers)
from bubbles.faces import EXPRESSIONS

from analysis.adaptive import AdaptivePolicy

__all__ = ["load_stimuli", "session_seeds", "participant_number", "key_mapping",
           "trial_plan", "Prepared", "StimulusBuilder", "spec_from_config",
           "policy_from_config", "SAMPLING_KEYS"]


def load_stimuli(cfg):
    """The StimulusSet a configuration names, restricted to its expressions.

    ``stimuli.source`` means what :func:`bubbles.load_source` says (the one meaning
    shared with the analysis): ``"faces"`` builds the embedded faces
    (``face_set(stimuli.n_identities, seed=0, size=stimuli.size)``), anything else is a
    folder read with :meth:`bubbles.stimuli.StimulusSet.from_folder`.
    """
    s_cfg = cfg["stimuli"]
    wanted = s_cfg["expressions"]
    if s_cfg["source"] == "faces":
        bad = [x for x in wanted if x not in EXPRESSIONS]
        if bad:
            raise ValueError(f"config key 'stimuli.expressions' must list expressions of "
                             f"the embedded faces {list(EXPRESSIONS)}, got {wanted}")
        stimuli = load_source("faces", n_identities=s_cfg["n_identities"],
                              size=s_cfg["size"], expressions=tuple(wanted) or None)
    else:
        try:
            stimuli = load_source(s_cfg["source"])
        except (OSError, ValueError) as err:
            raise ValueError(f"config key 'stimuli.source' must be \"faces\" or a folder "
                             f"of images with a manifest.csv, got {s_cfg['source']!r}: "
                             f"{err}") from None
    if wanted:
        bad = [x for x in wanted if x not in stimuli.expressions]
        if bad:
            raise ValueError(f"config key 'stimuli.expressions' must list expressions of "
                             f"the stimulus set {list(stimuli.expressions)}, got {wanted}")
        stimuli = stimuli.subset(stimuli.table["expression"].isin(wanted).to_numpy())
    labels = tuple(wanted) if wanted else stimuli.expressions
    if len(labels) < 2:
        raise ValueError(f"the stimulus set must show at least 2 expressions for a "
                         f"choice task, got {list(labels)}")
    if len(labels) > len(cfg["responses"]["keys"]):
        raise ValueError(f"config key 'responses.keys' must have one key per expression "
                         f"({len(labels)}: {list(labels)}), got {cfg['responses']['keys']}")
    return stimuli, labels


#: Keys of the ``[bubbles]`` table that choose how the centres are drawn (uniform or
#: adaptive, :func:`policy_from_config`), not part of the BubbleSpec.
SAMPLING_KEYS = ("sampling", "update_every", "floor")


def policy_from_config(cfg):
    """The session's :class:`analysis.adaptive.AdaptivePolicy` (None when uniform)."""
    b = cfg["bubbles"]
    if b.get("sampling", "uniform") != "adaptive":
        return None
    return AdaptivePolicy(update_every=b["update_every"], floor=b["floor"])


def spec_from_config(cfg, shape):
    """The session's base BubbleSpec from the ``[bubbles]`` table and the image shape."""
    b = dict(cfg["bubbles"])
    bands = b.pop("bands")
    for key in SAMPLING_KEYS:       # how centres are drawn, not what a mask is
        b.pop(key, None)
    try:
        return BubbleSpec(shape=tuple(shape), bands=bands or None, **b)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config table [bubbles] does not make a valid BubbleSpec: "
                         f"{err}") from None


def participant_number(participant):
    """Trailing digits of the participant id ('P07' -> 7), else a stable hash."""
    m = re.search(r"(\d+)$", str(participant))
    if m:
        return int(m.group(1))
    return zlib.crc32(str(participant).encode("utf-8"))


def session_seeds(seed, participant, session):
    """(order_seed, mask_seed): two 32-bit seeds for one participant and session."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(str(participant).encode("utf-8")),
                                 int(session)])
    order, mask = ss.generate_state(2)
    return int(order), int(mask)


def key_mapping(labels, keys, participant, seed, *, counterbalance=True):
    """Assign response keys to labels, counterbalanced across participants.

    The candidate mappings are the cyclic rotations of ``keys[:n]`` over the labels and
    of the same keys in reverse order (a Latin square both ways); participant number
    ``p`` gets mapping ``(p + seed) mod (number of mappings)``, so consecutive
    participants get different mappings and each label meets each key equally often.

    Returns
    -------
    mapping : dict
        ``label -> key``, in label order.
    index : int
        Which mapping (0 = the keys in the order given).
    """
    n = len(labels)
    pool = list(keys[:n])
    perms = []
    for order in (pool, pool[::-1]):
        for r in range(n):
            perm = order[r:] + order[:r]
            if perm not in perms:
                perms.append(perm)
    index = (participant_number(participant) + int(seed)) % len(perms) \
        if counterbalance else 0
    return dict(zip(labels, perms[index])), index


def trial_plan(stimuli, labels, n_trials, order_seed):
    """Stimulus row index of every trial: shuffled cycles through the whole set.

    Only stimuli whose expression is in ``labels`` are used; each cycle shows every one
    of them once, so expressions and identities stay balanced over the session.
    """
    rows = np.flatnonzero(stimuli.table["expression"].isin(list(labels)).to_numpy())
    rng = np.random.default_rng(order_seed)
    plan = []
    while len(plan) < n_trials:
        plan.extend(rng.permutation(rows).tolist())
    return plan[:n_trials]


@dataclass
class Prepared:
    """One trial's stimulus: the image to draw and the centres it was made from."""

    image: np.ndarray
    centers: list
    spec: object
    stim_index: int
    mask_index: int

    def centers_json(self):
        """Centres as ``[[[row, col], ...] per band]`` for the centres file."""
        out = []
        for c in self.centers:
            arr = np.asarray(c)[0]
            if np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            out.append(arr.tolist())
        return out


class StimulusBuilder:
    """Make bubbled stimuli for trials of a session.

    Parameters
    ----------
    images : ndarray, shape (n, H, W)
        The stimulus set's images in [0, 1].
    spec : BubbleSpec
        Base spec; each trial uses ``spec.replace(n_bubbles=k)``.
    mask_seed : int
        Seed of the centres; trial centres come from ``(spec, mask_seed, mask_index)``.
    cache_bytes : int
        Memory allowed for the cached Laplacian bands (multi-scale specs); bands of the
        least recently used images are dropped beyond it.
    """

    def __init__(self, images, spec, mask_seed, *, cache_bytes=512 * 2 ** 20):
        self.images = np.asarray(images, dtype=np.float32)
        self.spec = spec
        self.mask_seed = int(mask_seed)
        self._specs = {}
        self._bands = OrderedDict()
        per_image = (spec.n_bands + 1) * self.images[0].nbytes
        self._max_cached = max(1, cache_bytes // per_image)
        self._out = None

    def precompute(self, indices=None):
        """Compute the Laplacian bands of some (default: all) images now."""
        if not self.spec.multiscale:
            return
        indices = range(len(self.images)) if indices is None else indices
        for i in list(indices)[: self._max_cached]:
            self.bands(i)

    def bands(self, index):
        """Laplacian bands of image ``index`` (cached)."""
        if index in self._bands:
            self._bands.move_to_end(index)
            return self._bands[index]
        b = laplacian_bands(self.images[index], self.spec.n_bands)
        self._bands[index] = b
        if len(self._bands) > self._max_cached:
            self._bands.popitem(last=False)
        return b

    def trial_spec(self, n_bubbles):
        """``spec.replace(n_bubbles=n_bubbles)``, cached per count."""
        n = int(n_bubbles)
        if n not in self._specs:
            self._specs[n] = self.spec.replace(n_bubbles=n)
        return self._specs[n]

    def build(self, stim_index, n_bubbles, mask_index, *, centers=None):
        """The bubbled stimulus of one trial.

        ``centers``: the trial's centres when they were drawn elsewhere (an adaptive
        session's sampler, :class:`analysis.adaptive.AdaptiveSampler`), as
        :func:`bubbles.sample_centers` returns them for one trial; default: drawn from
        ``(spec, mask_seed, mask_index)``.

        Returns
        -------
        Prepared
            ``image`` float32 (H, W) in [0, 1] and ``centers`` (one (1, k, 2) array per
            band).
        """
        spec = self.trial_spec(n_bubbles)
        if centers is None:
            centers = sample_centers(spec, self.mask_seed, [int(mask_index)])
        h, w = spec.shape
        shape = (1, spec.n_bands, h, w) if spec.multiscale else (1, h, w)
        if self._out is None or self._out.shape != shape:
            self._out = np.empty(shape, np.float32)
        masks = render_masks(spec, centers, out=self._out)
        image = self.images[stim_index]
        bands = self.bands(stim_index) if spec.multiscale else None
        # a noise background is regenerable like the centres: trial t's field comes
        # from (mask_seed, t) (bubbles.noise_background); other backgrounds ignore them
        stim = bubble_stimuli(spec, image, masks, bands=bands, seed=self.mask_seed,
                              trials=[int(mask_index)])[0]
        per_band = centers if spec.multiscale else [centers]
        return Prepared(stim, per_band, spec, int(stim_index), int(mask_index))
