"""``bubbles compare-many A B [B ...] --out DIR``: every target of A against every one of B.

A is the measured side: a ``bubbles fmri analyze`` results folder (or its
``voxel_ci.zarr``), a regions' or people's DiagnosticImage (``roi_ci``, ``ci``); B the
probes of one or more layers (``bubbles ann probe`` outputs, stacked). The scores come
from :func:`analysis.compare_many.compare_many`; this module reads, calls and writes:

``compare_many.json``  settings, counts, the best-matched targets
``targets.tsv``        one row per target of A (best match, layer, ceiling, score, p)
``regions.tsv``        one row per region (``--roi``) or per target of A (regions,
                       people): preferred layer, mean best r per layer (and control)
``r.npy``              the (n_A, n_B) correlation matrix, float32
``layer_scores.png``   targets (or regions) by layers, best r (control in brackets)
``gallery.png``        the best-matched pairs side by side
``preferred_layer.nii.gz``, ``best_r.nii.gz``, ``score_over_ceiling.nii.gz`` (+ fit,
control maps) and ``preferred_layer.png`` when A is a voxel store.

For a voxel store the trials (for the noise ceiling and ``--n-permutations``) are
rebuilt from its results folder: the session named in ``summary.json``, the trials of
``betas.tsv``, the single-trial amplitudes of ``betas.nii.gz`` with the covariates of
the analysis regressed out again (as ``bubbles fmri analyze`` did).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.compare import CEILINGS
from analysis.compare_many import (compare_many, load_stack, plot_best_pairs,
                                   plot_layer_matrix, roi_table, write_layer_maps)
from analysis.figures import save_figure
from analysis.fmri.images import covariate_matrix, residualize
from analysis.fmri.stimulus import revealed_area, scale_centers
from analysis.io import read_background
from analysis.trials import TrialTable
from bubbles import center_maps

from .common import DataError, prepare_out, run_command

__all__ = ["main", "build_parser", "store_trials"]

OUTPUTS = ("compare_many.json", "targets.tsv", "regions.tsv", "r.npy", "layer_scores.png",
           "gallery.png", "preferred_layer.nii.gz", "best_r.nii.gz",
           "score_over_ceiling.nii.gz", "preferred_layer.png")
MATRIX_ROWS = 30


def build_parser():
    p = argparse.ArgumentParser(
        prog="bubbles compare-many",
        description="Score every target of A (voxels, regions, people) against every "
                    "target of B (the units of one or more layers): correlations, best "
                    "matches, split-half noise ceilings, permutation p of the best "
                    "match, the preferred layer, brain maps and figures.")
    p.add_argument("a", help="a 'bubbles fmri analyze' results folder or voxel_ci.zarr, "
                   "or a DiagnosticImage stem / .npz (regions, people)")
    p.add_argument("b", nargs="+", help="DiagnosticImage stem(s) of B, e.g. the probes of "
                   "several layers (stacked)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--control", nargs="+", default=None, metavar="STEM",
                   help="the probes of the same layers in the same network with random "
                        "weights (ann_bridge.probe.random_weights): the floor")
    p.add_argument("--trials", help="A's session CSV when A is one person's image "
                   "(default: the session recorded with A)")
    p.add_argument("--response", default=None, help="response column of --trials")
    p.add_argument("--roi", help="label image on the BOLD grid (3-D integers, names in "
                   "<stem>.tsv) for the per-region table, when A is a voxel store")
    p.add_argument("--resolution", type=int, default=None, help="long side of the common "
                   "grid in pixels (default: the coarser of A and B)")
    p.add_argument("--smoothing", type=float, default=0.0, help="extra Gaussian SD in "
                   "common-grid pixels, applied to both")
    p.add_argument("--no-match-smoothing", action="store_true", help="do not smooth the "
                   "sharper stack to the other's bubble sigma")
    p.add_argument("--no-ceiling", action="store_true", help="skip the noise ceiling and "
                   "p (no trials are read)")
    p.add_argument("--n-splits", type=int, default=4)
    p.add_argument("--n-permutations", type=int, default=0,
                   help="permutations for p of the best match (0 = none); each one "
                        "recomputes every map of A")
    p.add_argument("--ceiling", default="sqrt", choices=CEILINGS)
    p.add_argument("--min-ceiling", type=float, default=0.1)
    p.add_argument("--reliability-p", type=float, default=0.05,
                   help="score only targets whose split-half r beats shuffled "
                        "responses at this level")
    p.add_argument("--fit-layers", action="store_true", help="also the cross-validated "
                   "ridge combination of each layer's unit maps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=8, help="pairs in the gallery (<= 16)")
    p.add_argument("--background", help="grey image under the maps (.npy or an image "
                   "file); default: the mean face of A's session")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _usage(args):
    if args.n_splits < 1:
        return f"--n-splits must be >= 1, got {args.n_splits}"
    if args.n_permutations < 0:
        return f"--n-permutations must be >= 0 (0 = none), got {args.n_permutations}"
    if not args.smoothing >= 0:
        return f"--smoothing must be >= 0 pixels, got {args.smoothing}"
    if args.resolution is not None and args.resolution < 8:
        return f"--resolution must be >= 8 pixels, got {args.resolution}"
    if not 0 < args.reliability_p < 1:
        return f"--reliability-p must be in (0, 1), got {args.reliability_p}"
    if not 1 <= args.top <= 16:
        return f"--top must be in [1, 16], got {args.top}"
    if args.no_ceiling and args.n_permutations:
        return "--n-permutations needs the trials: drop --no-ceiling"
    return None


# -- trials of a voxel store -------------------------------------------------------------
def store_trials(stack):
    """(spec, centre maps, residual amplitudes (n_trials, n_voxels), session table) of
    a voxel store, rebuilt from its results folder as ``bubbles fmri analyze`` made
    them. Raises DataError naming the missing file."""
    import nibabel as nib

    folder = Path(stack.meta["store"]).parent
    need = [folder / "summary.json", folder / "betas.tsv", folder / "betas.nii.gz"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise DataError(f"the trials of {stack.meta['store']} are rebuilt from its results "
                        f"folder, which lacks {missing} (or pass --no-ceiling)")
    session = json.loads(need[0].read_text()).get("session")
    if not session or not Path(session).is_file():
        raise DataError(f"{need[0]} names the session {session!r}, which is not there "
                        "(or pass --no-ceiling)")
    table = TrialTable.read(session)
    tsv = pd.read_csv(need[1], sep="\t")
    pos = {int(t): i for i, t in enumerate(table.data["trial"])}
    missing = [int(t) for t in tsv["trial"] if int(t) not in pos]
    if missing:
        raise DataError(f"{need[1]} lists trials {missing[:5]} that are not in {session}")
    rows = np.array([pos[int(t)] for t in tsv["trial"]])
    attrs = stack.info
    centers = scale_centers([table.centers[0][i] for i in rows],
                            float(attrs.get("scale_factor", 1.0)))
    spec = stack.spec
    maps = center_maps(spec, centers)
    names = [c for c in ("area", "n_bubbles", "correct", "rt")
             if c in (attrs.get("covariates") or [])]
    if any(c.startswith("run_") for c in attrs.get("covariates") or []):
        names.append("run")
    cov, _ = covariate_matrix(names, area=revealed_area(spec, centers),
                              table_rows=table.data.iloc[rows],
                              run_of_trial=tsv["run"].to_numpy() - 1)
    vol = np.asarray(nib.load(str(need[2])).dataobj, np.float32)
    ijk = np.asarray(stack.meta["ijk"])
    betas = vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]].T               # (trials, voxels)
    if betas.shape[0] != len(rows):
        raise DataError(f"{need[2]} holds {betas.shape[0]} volumes but {need[1]} "
                        f"{len(rows)} trials")
    return spec, maps, residualize(betas, cov), table.select(rows)


def _region_labels(path, stack):
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"--roi {path} does not exist")
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    shape = tuple(stack.meta["volume_shape"])
    if data.shape[:3] != shape or not np.allclose(img.affine, stack.meta["affine"],
                                                  atol=1e-3):
        raise DataError(f"--roi {path.name} has shape {data.shape[:3]} / another affine "
                        f"than the voxel store {shape}: resample it to the BOLD grid")
    if data.ndim != 3 or not np.allclose(data, np.round(data)):
        raise DataError(f"--roi {path}: must be a 3-D image of integer labels (0 = none)")
    ijk = np.asarray(stack.meta["ijk"])
    labels = np.round(data[ijk[:, 0], ijk[:, 1], ijk[:, 2]]).astype(int)
    stem = str(path)[:-7] if str(path).endswith(".nii.gz") else str(path.with_suffix(""))
    names = {}
    lookup = Path(stem + ".tsv")
    if lookup.is_file():
        t = pd.read_csv(lookup, sep="\t")
        if {"index", "name"} <= set(t.columns):
            names = dict(zip(t["index"].astype(int), t["name"].astype(str)))
    return labels, names


# -- the command ---------------------------------------------------------------------------
def _run(args):
    prepare_out(args.out, OUTPUTS, force=args.force, create=False)
    sa = load_stack(args.a, what="A")
    sb = load_stack(list(args.b), what="B")
    control = None if args.control is None else load_stack(list(args.control),
                                                           what="--control")
    is_store = "ijk" in sa.meta
    trials = table = None
    if not args.no_ceiling:
        if is_store:
            spec, maps, resp, table = store_trials(sa)
            trials = (spec, maps, resp)
        else:
            source = args.trials or sa.info.get("session")
            if source and len(sa) == 1:
                table = trials = TrialTable.read(source)
            elif len(sa) > 1:
                warnings.warn(f"{args.a} holds {len(sa)} targets without their "
                              "single-trial responses: no noise ceiling or p (compute "
                              "them with analysis.compare_many.compare_many(trials=...))",
                              stacklevel=2)
            else:
                warnings.warn(f"{args.a} records no session: no noise ceiling or p (pass "
                              "--trials SESSION.csv)", stacklevel=2)
    labels = names = None
    if args.roi:
        if not is_store:
            raise DataError("--roi needs A to be a voxel store ('bubbles fmri analyze' "
                            "results)")
        labels, names = _region_labels(args.roi, sa)
    kw = dict(resolution=args.resolution, smoothing=args.smoothing,
              match_smoothing=not args.no_match_smoothing, progress=not args.quiet,
              fit_layers=args.fit_layers)
    res = compare_many(sa, sb, trials=trials, response=args.response,
                       n_splits=args.n_splits, n_permutations=args.n_permutations,
                       seed=args.seed, ceiling=args.ceiling, min_ceiling=args.min_ceiling,
                       reliability_p=args.reliability_p, **kw)
    ctrl = compare_many(sa, control, **kw) if control is not None else None
    background = _background(args.background, table, res.info["common_shape"])
    out = prepare_out(args.out, OUTPUTS, force=args.force)
    targets = res.table()
    if ctrl is not None:
        targets["control_best"] = ctrl.best_names
        targets["control_best_r"] = ctrl.best_r
        for k, layer in enumerate(ctrl.layers):
            targets[f"control_r_{layer}"] = ctrl.layer_r[:, k]
    targets.to_csv(out / "targets.tsv", sep="\t", index=False, float_format="%.5g")
    regions = roi_table(res, labels, names, control=ctrl)
    regions.to_csv(out / "regions.tsv", sep="\t", index=False, float_format="%.5g")
    np.save(out / "r.npy", res.r)
    summary = res.to_dict()
    summary.update(a=str(args.a), b=[str(x) for x in args.b],
                   control=None if ctrl is None else {
                       "b": [str(x) for x in args.control],
                       "median_best_r": ctrl.to_dict(top=0)["median_best_r"]})
    written = [out / "targets.tsv", out / "regions.tsv", out / "r.npy"]
    if is_store:
        written += write_layer_maps(res, out, control=ctrl)
        written.append(_brain_figure(out, res))
    (out / "compare_many.json").write_text(json.dumps(summary, indent=2))
    written.append(out / "compare_many.json")
    written += _figures(out, res, ctrl, sa, sb, regions, labels is not None or len(sa) <= 40,
                        background, args.top)
    top = res.to_dict(top=1)["top"]
    line = f"{res.n_a} x {len(res.names_b)} maps on {res.info['common_shape']}"
    if top:
        line += f"; best pair {top[0]['target']} ~ {top[0]['best']} r {top[0]['best_r']:.3f}"
    if res.scored is not None:
        line += f"; {int(res.scored.sum())} of {res.n_a} targets scored"
    print(line)
    print(f"wrote {len(written)} files to {out}")
    return 0


def _background(path, table, shape):
    if path:
        return read_background(path, tuple(shape))
    if table is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        face = table.mean_stimulus()
    if face is None:
        return None
    from scipy.ndimage import zoom

    return zoom(face, (shape[0] / face.shape[0], shape[1] / face.shape[1]), order=1)


def _figures(out, res, ctrl, sa, sb, regions, per_row, background, top):
    written = []
    if per_row:                                   # regions or a few targets
        rows = list(regions["region"])
        vals = np.array([[regions[f"mean_r_{layer}"][i] for layer in res.layers]
                         for i in range(len(rows))])
        floor = None if ctrl is None else np.array(
            [[regions[f"control_mean_r_{layer}"][i] for layer in res.layers]
             for i in range(len(rows))])
        title = "mean best r of each layer's units"
    else:                                          # many voxels: the best-matched ones
        order = np.argsort(-np.nan_to_num(res.best_r, nan=-np.inf))[:MATRIX_ROWS]
        rows = [res.names_a[i] for i in order]
        vals = res.layer_r[order]
        floor = None if ctrl is None else ctrl.layer_r[order]
        title = f"best r of each layer's units, the {len(order)} best-matched targets"
    fig = plot_layer_matrix(vals, rows, res.layers, title=title, floor=floor)
    written.append(save_figure(fig, out / "layer_scores.png"))
    fig = plot_best_pairs(res, sa, sb, top=top, background=background)
    written.append(save_figure(fig, out / "gallery.png"))
    return written


def _brain_figure(out, res):
    """The preferred layer of each voxel (of each scored voxel, with a ceiling), one
    colour per layer, over no background (the store has no anatomy)."""
    import nibabel as nib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from nilearn import plotting

    img = nib.load(str(out / "preferred_layer.nii.gz"))
    data = np.asarray(img.dataobj, np.float32)
    note = "every voxel"
    if res.scored is not None:
        keep = np.zeros(data.shape, bool)
        ijk = np.asarray(res.meta["ijk"])
        keep[tuple(ijk[res.scored].T)] = True
        data = np.where(keep, data, 0)
        note = f"{int(res.scored.sum())} scored voxels of {res.n_a}"
    n = len(res.layers)
    colours = [f"C{k % 10}" for k in range(n)]
    fig = Figure(figsize=(8, 3))
    FigureCanvasAgg(fig)
    legend = ", ".join(f"{k + 1} {layer}" for k, layer in enumerate(res.layers))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plotting.plot_roi(nib.Nifti1Image(data, img.affine), bg_img=None, figure=fig,
                          title=f"preferred layer ({note}): {legend}",
                          display_mode="ortho", draw_cross=False, colorbar=n > 1,
                          cmap=ListedColormap(colours), vmin=0.5, vmax=n + 0.5)
    return save_figure(fig, out / "preferred_layer.png")


def main(argv) -> int:
    """Entry point of ``bubbles compare-many``; returns the exit status (0 done, 1 a
    data error, 2 a usage error)."""
    return run_command("compare-many", build_parser(), _run, argv, usage_check=_usage)
