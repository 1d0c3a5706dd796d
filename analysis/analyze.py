"""A session's diagnostic image with its statistics: the library behind ``bubbles analyze``.

:func:`select_trials` picks the trials a map is made from (a block, the trials with a
response), :func:`image_tests` runs the Stat4Ci pixel and cluster tests on every band of
a map, and :func:`analyze_session` does both with :func:`analysis.classification_image`
in between, returning a :class:`SessionAnalysis` whose ``image.info`` records what
``bubbles compare`` needs to make the same map again from the same trials.

An adaptive session (``TrialTable.adaptive``) is corrected for its unequal sampling: its
centre maps are weighted by each block's density (:meth:`TrialTable.center_maps`), and
with methods 'regression' / 'median_split' and the analytic null the map and its tests
use the per-block exact z of :func:`analysis.adaptive.adaptive_image` (``scale='exact'``,
N(0, 1) under the null at every pixel); ``summary['sampling']`` says which.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .adaptive import adaptive_image
from .ci import classification_image
from .diagnostic import DiagnosticImage
from .estimators import ESTIMATORS, glm_image
from .stats import cluster_test, pixel_test

__all__ = ["select_trials", "image_tests", "ImageTests", "analyze_session",
           "SessionAnalysis"]


def select_trials(table, *, block=None, response="correct", drop_missing=False,
                  warn_blocks=True):
    """The trials of ``table`` a map is made from, and notes on what was chosen.

    Parameters
    ----------
    table : TrialTable
    block : str, optional
        Keep only the rows whose 'block' column equals it (e.g. 'main'); without it and
        with several blocks, a warning says they are analysed together.
    response : str
        The response column (checked to exist).
    drop_missing : bool
        Leave out trials whose response is missing (otherwise they are an error where
        the responses are read).
    warn_blocks : bool
        Warn when several blocks are analysed together (``block`` None).

    Returns
    -------
    TrialTable
    """
    data = table.data
    blocks = sorted(data["block"].astype(str).unique()) if "block" in data else []
    if block is not None:
        if "block" not in data:
            raise ValueError(f"block {block!r} was asked for but the trials have no "
                             "'block' column")
        table = table.select((data["block"].astype(str) == str(block)).to_numpy())
        if len(table) == 0:
            raise ValueError(f"block {block!r} matches no trial; the trials' blocks are "
                             f"{blocks}")
    elif len(blocks) > 1 and warn_blocks:
        warnings.warn(f"analysing the trials of all blocks {blocks} together; pass "
                      "--block NAME (e.g. --block main) to leave out practice trials",
                      UserWarning, stacklevel=2)
    if drop_missing:
        if response not in table.data:
            table.responses(response)            # raises the clear error
        table = table.dropna(response)
    return table


@dataclass
class ImageTests:
    """The pixel and cluster tests of every band of a map (one entry per band)."""

    pixel: list
    cluster: list
    sigmas: list
    notes: list = field(default_factory=list)

    def to_dicts(self):
        clusters = self.cluster if self.cluster is not None else [None] * len(self.pixel)
        return [{"band": b, "sigma": s, "pixel_test": p.to_dict(),
                 "cluster_test": None if c is None else c.to_dict()}
                for b, (s, p, c) in enumerate(zip(self.sigmas, self.pixel, clusters))]


def image_tests(image, *, sigmas=None, p=0.05, cluster_threshold=2.7, tail="upper",
               search_region=None) -> ImageTests:
    """Stat4Ci pixel and cluster tests of each band of a one-observer image.

    Parameters
    ----------
    image : DiagnosticImage
        One target; one or more bands.
    sigmas : sequence of float, optional
        The smoothness of each band's map in pixels (default: the spec's sigmas).
    p, cluster_threshold, tail, search_region
        As :func:`analysis.pixel_test` / :func:`analysis.cluster_test` take them
        (default region: the spec's search region).

    Returns
    -------
    ImageTests
        The tests' random-field validity warnings are collected in ``notes`` (with the
        band they concern) instead of being issued.
    """
    if image.n_targets != 1:
        raise ValueError(f"image must hold one observer's map, got {image.n_targets} "
                         "targets")
    spec = image.spec
    if sigmas is None:
        if spec is None:
            raise ValueError("sigmas must be given for an image without a spec")
        sigmas = list(spec.sigmas)
    sigmas = [float(s) for s in sigmas]
    if len(sigmas) != image.n_bands:
        raise ValueError(f"sigmas must give one sigma per band ({image.n_bands}), got "
                         f"{len(sigmas)}")
    if search_region is None and spec is not None:
        search_region = spec.search_region
    res = ImageTests([], [], sigmas)
    for b, z in enumerate(image.maps()[0]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pix = pixel_test(z, sigmas[b], p, search_region=search_region, tail=tail)
            clu = cluster_test(z, sigmas[b], p, cluster_threshold=cluster_threshold,
                               search_region=search_region, tail=tail)
        res.pixel.append(pix)
        res.cluster.append(clu)
        label = f"band {b + 1} of {image.n_bands}: " if image.n_bands > 1 else ""
        res.notes += [label + n for n in dict.fromkeys(pix.warnings + clu.warnings)]
    return res


@dataclass
class PermutationPixels:
    """The pixels of a glm / sparse map beyond its permutation max-statistic threshold."""

    threshold: float
    significant: np.ndarray
    p: float
    n_permutations: int
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return {"test": "permutation max statistic over pixels (upper tail)",
                "threshold": self.threshold, "n_significant": int(self.significant.sum()),
                "p": self.p, "n_permutations": self.n_permutations}


def _permutation_tests(image, sigmas):
    """ImageTests of a glm / sparse image: its permutation threshold per band."""
    info = image.info
    thr = np.atleast_1d(np.asarray(info["fwe_threshold"], float))
    res = ImageTests([], None, sigmas, notes=[
        f"method {image.method!r}: significance by the permutation max statistic "
        f"({info['n_permutations']} permutations), not random field theory"])
    for b, z in enumerate(image.maps()[0]):
        t = float(thr[min(b, len(thr) - 1)])
        res.pixel.append(PermutationPixels(t, z > t, float(info.get("p", 0.05)),
                                           int(info["n_permutations"])))
    return res


@dataclass
class SessionAnalysis:
    """What :func:`analyze_session` returns: the map, its tests, a JSON-able summary."""

    image: DiagnosticImage
    tests: ImageTests
    table: object
    summary: dict


def analyze_session(table, *, response="correct", method="regression", null="analytic",
                    n_permutations=1000, seed=0, block=None, drop_missing=False,
                    sigma=None, p=0.05, cluster_threshold=2.7, tail="upper",
                    search_region=None, observer="person", resolution=None,
                    penalties=None, progress=True):
    """A session's diagnostic image and its tests, as ``bubbles analyze`` writes them.

    Parameters
    ----------
    table : TrialTable
    response, method, null, n_permutations, seed
        As :func:`analysis.classification_image` (the response is a column of the table).
        ``method`` 'glm' or 'sparse' uses :func:`analysis.estimators.glm_image`, whose
        inference is always the permutation max statistic (its ``n_permutations``); the
        random-field tests do not hold for them and are not run.
    resolution, penalties
        For 'glm' / 'sparse': the coarse grid's long side and the penalty grid.
    block, drop_missing
        As :func:`select_trials`.
    sigma : float, optional
        Smoothness (pixels) the tests assume for every band; default: the spec's sigma
        of each band (a different value warns).
    p, cluster_threshold, tail, search_region
        As :func:`image_tests`.
    observer : str
        Recorded on the image ('person' for a participant's session).

    Returns
    -------
    SessionAnalysis
    """
    notes = []
    with warnings.catch_warnings(record=True) as caught:   # kept in the summary
        warnings.simplefilter("always")
        table = select_trials(table, block=block, response=response,
                              drop_missing=drop_missing)
        spec = table.spec
        if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be > 0 pixels (the smoothness of the map), got "
                             f"{sigma!r}")
        if sigma is not None and any(abs(sigma - s) > 1e-9 for s in spec.sigmas):
            warnings.warn(f"testing with sigma {sigma:g} px, not the session's bubble "
                          f"sigma {list(spec.sigmas)}: the thresholds assume that "
                          "smoothness", UserWarning, stacklevel=2)
        sampling = None
        exact = (getattr(table, "adaptive", False) and null == "analytic"
                 and method in ("regression", "median_split"))
        if method in ESTIMATORS:
            image = glm_image(spec, table.center_list(), table.responses(response), method,
                              resolution=resolution, penalties=penalties,
                              null="permutation", n_permutations=n_permutations, p=p,
                              seed=seed, observer=observer, progress=progress)
        elif exact:
            image = adaptive_image(spec, table.center_list(), table.responses(response),
                                   table.densities, table.blocks(), method,
                                   scale="exact", null=null, observer=observer,
                                   progress=progress)
        else:
            image = classification_image(spec, table.center_maps(),
                                         table.responses(response), method=method,
                                         null=null, n_permutations=n_permutations,
                                         seed=seed, observer=observer, progress=progress)
        if getattr(table, "adaptive", False):
            sampling = {"kind": "adaptive", "policy": table.policy.to_dict(),
                        "weights": "1 / (N q_b(c)) per centre (Horvitz-Thompson)",
                        "z_scale": "exact" if exact else "map",
                        "tests_on": ("the per-block exact z, combined over blocks "
                                     "(inverse normal method)" if exact else
                                     "the z of the weighted centre maps")}
            if not exact:
                warnings.warn(f"adaptive session analysed with method {method!r} and null "
                              f"{null!r}: the map is corrected (weighted centre maps) but "
                              "the exact per-block z needs method regression or "
                              "median_split with the analytic null; tests on this map are "
                              "approximate", UserWarning, stacklevel=2)
    notes += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    path = None if table.path is None else str(Path(table.path).resolve())
    # what compare needs to make this map again from the same trials
    image.info.update(session=path, block=block, response=response, method=method,
                      null=null, drop_missing=bool(drop_missing))
    if method == "proportion":
        notes.append("method 'proportion' is z-scored across the pixels of the image, not "
                     "against a null: its pixel and cluster tests are descriptive; use "
                     "--method regression for inference")
    sigmas = [sigma] * spec.n_bands if sigma is not None else list(spec.sigmas)
    if method in ESTIMATORS:
        tests = _permutation_tests(image, sigmas)
    else:
        tests = image_tests(image, sigmas=sigmas, p=p, cluster_threshold=cluster_threshold,
                            tail=tail, search_region=search_region)
    notes += tests.notes
    accuracy = None
    if "correct" in table.data and response == "correct":
        accuracy = float(table.responses("correct").mean())
    summary = {"session": path, "method": method, "response": response, "null": null,
               "block": block, "n_trials": int(image.n_trials), "spec": spec.to_dict(),
               "accuracy": accuracy, "bands": tests.to_dicts(), "info": image.info,
               "warnings": notes}
    if sampling is not None:
        summary["sampling"] = sampling
    return SessionAnalysis(image, tests, table, summary)
