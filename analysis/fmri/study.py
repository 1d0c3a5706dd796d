"""A whole study: BOLD runs -> single-trial amplitudes -> voxel diagnostic images -> files.

:func:`analyze_study` computes (the Zarr store of the voxel images is its output
array, written chunk by chunk); :func:`write_outputs` writes the NIfTI maps, the betas,
the summary and the figures; :func:`read_voxel_image` and :func:`read_region_image`
export one voxel's or region's :class:`analysis.DiagnosticImage` from a results folder.

Outputs, in the BOLD space (``write_outputs``)::

    peak_z.nii.gz         each voxel's largest |z|
    n_significant.nii.gz  its significant pixels
    roi_<name>_z.nii.gz   its mean z inside each stimulus ROI (eyes, mouth, ...)
    behaviour_r.nii.gz    correlation with a person's image (with behaviour)
    betas.nii.gz          4-D single-trial amplitudes; betas.tsv names each volume's trial
    voxel_ci.zarr         array z (n_voxels, h, w) float32, array ijk (n_voxels, 3)
    roi_ci.npz/.json      the regions' DiagnosticImage (with regions)
    summary.json
    peak_z.png, roi_<name>_z.png, gallery.png
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bubbles import BubbleSpec, center_maps

from ..diagnostic import DiagnosticImage, load_image, to_jsonable
from ..figures import plot_montage, save_figure
from .glm import choose_hrf, run_design, single_trial_betas
from .images import (DEFAULT_COVARIATES, covariate_matrix, residualize, voxel_images)
from .inputs import run_data
from .stimulus import (analysis_spec, resize_map, revealed_area, scale_centers,
                       stimulus_rois)

__all__ = ["FmriResult", "estimate_betas", "analyze_study", "write_outputs",
           "read_voxel_image", "read_region_image", "create_store", "OUTPUTS"]

OUTPUTS = ("peak_z.nii.gz", "n_significant.nii.gz", "betas.nii.gz", "betas.tsv",
           "voxel_ci.zarr", "summary.json", "peak_z.png", "gallery.png",
           "behaviour_r.nii.gz", "roi_ci.npz", "roi_ci.json")
ZARR_VOXEL_CHUNK = 64


@dataclass
class FmriResult:
    """What :func:`analyze_study` computed (arrays over the voxels of the mask)."""

    study: object
    betas: np.ndarray                # (n_trials, n_voxels) float32
    rows: np.ndarray                 # session rows of the trials
    run_of_trial: np.ndarray
    spec: BubbleSpec                 # analysis spec
    factor: float
    stats: object                    # VoxelStats
    rois: dict                       # stimulus ROIs at the analysis resolution
    covariates: list
    store: Path | None
    z: np.ndarray | None = None      # (n_voxels, h, w) without a store
    hrf_index: np.ndarray | None = None
    region_image: DiagnosticImage | None = None
    region_stats: object = None
    mean_face: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def estimate_betas(study, *, estimator="lss", hrf="glover", high_pass=0.01,
                   scaling=None, chunk_size=8192):
    """Single-trial amplitudes of every voxel, runs estimated separately.

    Returns ``(betas (n_trials, n_voxels) float32, hrf_index or None)``, trials in
    the order of :attr:`Study.rows`.
    """
    designs = [run_design(r.events, r.n_scans, r.t_r, hrf=hrf, high_pass=high_pass,
                          confounds=r.confounds, sample_mask=r.sample_mask)
               for r in study.runs]
    if hrf == "library":                       # needs every run for the choice
        ys = [run_data(study, r) for r in study.runs]
        idx = choose_hrf(designs, ys, scaling=scaling)
        parts = [single_trial_betas(d, y, estimator=estimator, hrf_index=idx,
                                    chunk_size=chunk_size, scaling=scaling)
                 for d, y in zip(designs, ys)]
        return np.concatenate(parts), idx
    parts = []
    for d, r in zip(designs, study.runs):
        y = run_data(study, r)
        parts.append(single_trial_betas(d, y, estimator=estimator, chunk_size=chunk_size,
                                        scaling=scaling))
        del y
    return np.concatenate(parts), None


def create_store(path, n_targets, shape, *, attrs, ijk=None, chunk=ZARR_VOXEL_CHUNK):
    """A Zarr group at ``path`` with array ``z`` (n_targets, h, w) float32 chunked by
    ``chunk`` voxels, array ``ijk`` and ``attrs``; returns the path of ``z``."""
    import zarr

    from zarr.codecs import BloscCodec

    root = zarr.open_group(str(path), mode="w")
    # LZ4 with byte shuffle: 3-4 times faster to write than zarr's default Zstandard,
    # for about the same size on z maps
    root.create_array("z", shape=(n_targets,) + tuple(shape), dtype="float32",
                      chunks=(chunk,) + tuple(shape), fill_value=0.0,
                      compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"))
    if ijk is not None:
        root.create_array("ijk", data=np.asarray(ijk, np.int32))
    root.attrs.update(to_jsonable(attrs))
    return Path(path) / "z"


def _behaviour_map(image, shape):
    if image is None:
        return None
    if not isinstance(image, DiagnosticImage):
        raise TypeError(f"behaviour must be a DiagnosticImage, got {type(image).__name__}")
    if image.n_targets != 1 or image.n_bands != 1:
        raise ValueError(f"behaviour must be one observer's single-band image, got dims "
                         f"{image.dims} of shape {np.shape(image.z)}")
    m = np.asarray(image.maps()[0, 0], np.float64)
    if m.shape != tuple(shape):
        warnings.warn(f"the behavioural image ({m.shape[0]} x {m.shape[1]}) is resampled "
                      f"to the voxel images' {shape[0]} x {shape[1]}", stacklevel=3)
        m = resize_map(m, shape)
    return m


def analyze_study(study, *, resolution=64, estimator="lss", hrf="glover",
                  covariates=DEFAULT_COVARIATES, method="regression", p=0.05,
                  permutations=0, seed=0, regions=None, behaviour=None, store=None,
                  scheduler=None, chunk_size=1024, high_pass=0.01, scaling=None,
                  betas=None, progress=False):
    """Voxel diagnostic images of a study and their statistics.

    Parameters
    ----------
    study : analysis.fmri.inputs.Study
    resolution : int
        Long side of the voxel images, pixels (see :mod:`analysis.fmri.stimulus`).
    estimator : {'lss', 'lsa'}
    hrf : {'glover', 'spm', 'library'}
    covariates : sequence of str
        Regressed out of the amplitudes first (:data:`analysis.fmri.images.COVARIATES`).
    method : {'regression', 'median_split'}
    p : float
    permutations : int
        0 (RFT + Bonferroni over voxels) or N >= 20 (max-statistic).
    seed : int
    regions : (names, masks (k, n_voxels)), optional
        From :func:`analysis.fmri.inputs.read_regions`: each region's mean amplitude is
        one more target (observer 'roi').
    behaviour : DiagnosticImage, optional
    store : path, optional
        The Zarr group to create (``voxel_ci.zarr``); without it the z maps stay in
        memory (``result.z``).
    scheduler : None, 'local' or address
    chunk_size : int
        Voxels per task.
    high_pass : float
        Hz.
    scaling : {None, 'percent'}
    betas : (betas, hrf_index), optional
        :func:`estimate_betas` of the study with these options, when the caller has
        them (a command estimates them before it creates its output folder: the data
        are checked, e.g. for NaN, before anything is written).

    Returns
    -------
    FmriResult
    """
    t0 = time.perf_counter()
    table = study.table
    if betas is None:
        betas = estimate_betas(study, estimator=estimator, hrf=hrf, high_pass=high_pass,
                               scaling=scaling)
    betas, hrf_index = betas
    t_betas = time.perf_counter() - t0
    rows = study.rows
    run_of_trial = study.run_of_trial
    spec, f = analysis_spec(table.spec, resolution)
    centers = scale_centers([table.centers[0][i] for i in rows], f)
    maps = center_maps(spec, centers)
    area = revealed_area(spec, centers)
    cov, cov_names = covariate_matrix(list(covariates), area=area,
                                      table_rows=table.data.iloc[rows],
                                      run_of_trial=run_of_trial)
    resid = residualize(betas, cov)
    rois = stimulus_rois(table, spec.shape)
    beh = _behaviour_map(behaviour, spec.shape)
    n_vox = betas.shape[1]
    attrs = {"format": "bubbles.voxel_ci", "version": 1, "spec": spec.to_dict(),
             "session_spec": table.spec.to_dict(), "scale_factor": f,
             "affine": study.affine, "volume_shape": list(study.mask.shape),
             "n_trials": int(len(rows)), "method": method, "estimator": estimator,
             "hrf": hrf, "covariates": cov_names, "observer": "voxel"}
    zpath = None
    z = None
    if store is not None:
        zpath = create_store(store, n_vox, spec.shape, attrs=attrs, ijk=study.ijk)
        chunk_size = max(ZARR_VOXEL_CHUNK, chunk_size // ZARR_VOXEL_CHUNK * ZARR_VOXEL_CHUNK)
    else:
        z = np.empty((n_vox,) + tuple(spec.shape), np.float32)
    t1 = time.perf_counter()
    stats = voxel_images(spec, maps, resid, method=method, p=p, permutations=permutations,
                         seed=seed, rois=rois, behaviour=beh, store=zpath,
                         chunk_size=chunk_size, scheduler=scheduler, progress=progress,
                         out=z)
    t_images = time.perf_counter() - t1
    if store is not None:
        import zarr

        zarr.open_group(str(store), mode="r+").attrs.update(to_jsonable(
            {"threshold": stats.threshold, "correction": stats.correction}))
    region_image = region_stats = None
    if regions is not None:
        names, masks = regions
        amp = np.stack([betas[:, m].mean(axis=1) for m in masks], axis=1)
        ramp = residualize(amp, cov)
        rz = np.empty((len(names),) + tuple(spec.shape), np.float32)
        region_stats = voxel_images(spec, maps, ramp, method=method, p=p,
                                    permutations=permutations, seed=seed, rois=rois,
                                    behaviour=beh, out=rz)
        region_image = DiagnosticImage(
            z=rz, method=method, spec=spec, n_trials=len(rows), dims=("target", "y", "x"),
            targets=names, observer="roi",
            info={"threshold": region_stats.threshold,
                  "correction": region_stats.correction, "covariates": cov_names,
                  "estimator": estimator, "hrf": hrf, "n_voxels": masks.sum(1).tolist(),
                  "session": str(table.path) if table.path else None})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        face = table.mean_stimulus()
    mean_face = None if face is None else resize_map(face, spec.shape)
    info = {"seconds": {"betas": t_betas, "images": t_images,
                        "total": time.perf_counter() - t0},
            "covariate_r2": _r2(betas, resid)}
    return FmriResult(study=study, betas=betas, rows=rows, run_of_trial=run_of_trial,
                      spec=spec, factor=f, stats=stats, rois=rois, covariates=cov_names,
                      store=None if store is None else Path(store), z=z,
                      hrf_index=hrf_index, region_image=region_image,
                      region_stats=region_stats, mean_face=mean_face, info=info)


def _r2(b, r):
    tot = ((b - b.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = 1 - (r.astype(np.float64) ** 2).sum(axis=0) / tot
    return float(np.nanmedian(v)) if v.size else None


def _volume(study, values, fill=0.0):
    out = np.full(study.mask.shape + np.shape(values)[1:], fill, np.float32)
    out[study.mask] = values
    return out


def write_outputs(result, out, *, figures=True, top=16):
    """Write the NIfTI maps, betas, summary and figures of ``result`` into ``out``.

    Returns the list of paths written (the Zarr store was written by
    :func:`analyze_study`).
    """
    import nibabel as nib

    from concurrent.futures import ThreadPoolExecutor

    out = Path(out)
    study, stats = result.study, result.stats
    written = []
    # the NIfTI files are compressed on a second thread (zlib releases the GIL) while
    # this one writes the tables and draws the figures
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nifti")
    jobs = []

    def save(values, name):
        img = nib.Nifti1Image(_volume(study, values), study.affine)
        img.header.set_xyzt_units("mm", "sec")
        jobs.append(pool.submit(nib.save, img, str(out / name)))
        written.append(out / name)
        return img

    save(result.betas.T, "betas.nii.gz")
    peak_img = save(stats.peak_z, "peak_z.nii.gz")
    save(stats.n_significant.astype(np.float32), "n_significant.nii.gz")
    roi_imgs = {k: save(v, f"roi_{k}_z.nii.gz") for k, v in stats.roi_z.items()}
    if stats.behaviour_r is not None:
        save(stats.behaviour_r, "behaviour_r.nii.gz")
    table = study.table.data.iloc[result.rows]
    tsv = pd.DataFrame({"volume": np.arange(len(result.rows)),
                        "trial": table["trial"].to_numpy(),
                        "run": result.run_of_trial + 1})
    for col in ("stimulus_id", "n_bubbles", "correct", "rt"):
        if col in table:
            tsv[col] = table[col].to_numpy()
    tsv.to_csv(out / "betas.tsv", sep="\t", index=False)
    written.append(out / "betas.tsv")
    if result.region_image is not None:
        written += list(result.region_image.save(out / "roi_ci", overwrite=True))
    order = np.argsort(-stats.peak_z)[:top]
    ijk = study.ijk
    summary = {
        "n_voxels": int(len(stats.peak_z)), "n_trials": int(len(result.rows)),
        "n_runs": len(study.runs), "resolution": list(result.spec.shape),
        "scale_factor": result.factor, "sigma_px": result.spec.sigma,
        "covariates": result.covariates, "threshold": stats.threshold,
        "correction": stats.correction,
        "n_voxels_significant": int((stats.n_significant > 0).sum()),
        "mask": study.mask_source,
        "runs": [{"bold": str(r.bold), "events": str(r.events_path), "t_r": r.t_r,
                  "n_scans": r.n_scans, "n_trials": int(len(r.rows)),
                  "confounds": None if r.confounds_path is None else str(r.confounds_path),
                  "confound_columns": r.confound_names} for r in study.runs],
        "strongest_voxels": [{"ijk": ijk[i].tolist(), "peak_z": float(stats.peak_z[i]),
                              "n_significant": int(stats.n_significant[i]),
                              **{f"roi_{k}_z": float(v[i]) for k, v in stats.roi_z.items()}}
                             for i in order],
        "stimulus_rois": {k: int(v.sum()) for k, v in result.rois.items()},
        "session": str(study.table.path) if study.table.path else None,
        **result.info}
    if stats.perm_max is not None:
        summary["permutation_max"] = stats.perm_max.tolist()
    if result.hrf_index is not None:
        summary["hrf_library_counts"] = np.bincount(result.hrf_index).tolist()
    if result.region_stats is not None:
        rs = result.region_stats
        summary["regions"] = [{"name": n, "peak_z": float(rs.peak_z[i]),
                               "n_significant": int(rs.n_significant[i])}
                              for i, n in enumerate(result.region_image.targets)]
        summary["regions_threshold"] = rs.threshold
    (out / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2))
    written.append(out / "summary.json")
    try:
        if figures:
            written += _figures(result, out, peak_img, roi_imgs, order)
    finally:
        pool.shutdown(wait=True)
    for job in jobs:
        job.result()                    # raise a failed write here
    return written


def _figures(result, out, peak_img, roi_imgs, order):
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from nilearn import plotting
    from nilearn.image import index_img

    import nibabel as nib

    written = []
    bg = index_img(nib.load(str(result.study.runs[0].bold)), 0)   # first volume
    stats = result.stats
    for img, name, title in [(peak_img, "peak_z.png", "peak |z| of each voxel's image")] + [
            (v, f"roi_{k}_z.png", f"mean z inside the {k}") for k, v in roi_imgs.items()]:
        fig = Figure(figsize=(8, 3))
        FigureCanvasAgg(fig)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plotting.plot_stat_map(img, bg_img=bg, figure=fig, title=title,
                                   threshold=stats.threshold if name == "peak_z.png"
                                   else None, display_mode="ortho", draw_cross=False)
        written.append(save_figure(fig, out / name))
    z = _read_rows(result, order)
    ijk = result.study.ijk
    names = [f"{tuple(ijk[i].tolist())} {stats.peak_z[i]:.1f}" for i in order]
    fig = plot_montage(z, names, background=result.mean_face,
                       title=f"strongest voxels (peak |z|), threshold {stats.threshold:.2f}")
    written.append(save_figure(fig, out / "gallery.png"))
    return written


def _read_rows(result, rows):
    if result.z is not None:
        return result.z[rows]
    import zarr

    arr = zarr.open_group(str(result.store), mode="r")["z"]
    return np.stack([arr[int(i)] for i in rows]) if len(rows) else np.zeros(
        (0,) + tuple(result.spec.shape), np.float32)


def read_voxel_image(folder, ijk):
    """One voxel's DiagnosticImage (observer 'voxel', target named 'i,j,k') from the
    ``voxel_ci.zarr`` of a results folder, read without loading the other voxels."""
    import zarr

    path = Path(folder) / "voxel_ci.zarr"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (run 'bubbles fmri analyze' "
                                f"with --out {folder} first)")
    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    if attrs.get("format") != "bubbles.voxel_ci":
        raise ValueError(f"{path} is not a bubbles voxel image store")
    want = np.asarray(ijk, int).ravel()
    if want.size != 3:
        raise ValueError(f"ijk must be 3 voxel indices, got {ijk!r}")
    hit = np.flatnonzero((root["ijk"][:] == want).all(axis=1))
    if not hit.size:
        raise ValueError(f"voxel {tuple(want.tolist())} is not in the brain mask of "
                         f"{folder} (volume shape {attrs.get('volume_shape')})")
    z = np.asarray(root["z"][int(hit[0])], np.float32)
    spec = BubbleSpec.from_dict(attrs["spec"])
    name = ",".join(str(v) for v in want)
    return DiagnosticImage(
        z=z, method=attrs["method"], spec=spec, n_trials=int(attrs["n_trials"]),
        observer="voxel",
        info={"voxel": name, "ijk": want.tolist(), "source": str(path),
              "threshold": attrs.get("threshold"), "correction": attrs.get("correction"),
              "estimator": attrs.get("estimator"), "hrf": attrs.get("hrf"),
              "covariates": attrs.get("covariates")})


def read_region_image(folder, name):
    """One region's DiagnosticImage from the ``roi_ci`` of a results folder."""
    stem = Path(folder) / "roi_ci"
    if not stem.with_suffix(".json").is_file():
        raise FileNotFoundError(f"{stem}.json does not exist (run 'bubbles fmri "
                                "analyze' with --roi first)")
    img = load_image(stem)
    if name not in img.targets:
        raise ValueError(f"region {name!r} is not among {img.targets}")
    i = img.targets.index(name)
    return DiagnosticImage(z=np.asarray(img.z[i]), method=img.method, spec=img.spec,
                           n_trials=img.n_trials, observer="roi",
                           info={**img.info, "region": name})
