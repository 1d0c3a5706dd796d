"""One self-contained HTML page from a results folder: the report people read.

:func:`collect` walks a results folder (``bubbles demo``'s, or any folder holding the
outputs of ``bubbles run``, ``analyze``, ``compare``, ``ann probe | attribute``,
``fmri analyze`` and ``plan``, in any subset and layout) and recognises each result by
its files: a session by its sidecar, a diagnostic image by its ``.json``, a comparison by
``compare.json``, an fMRI analysis by ``summary.json`` beside ``peak_z.nii.gz``, a plan by
``plan.json``. :func:`build_report` turns what it found into one HTML page (Jinja2
templates in ``analysis/templates``): a summary at the top (what was run, trials,
accuracy, one sentence per observer naming where its map is significant), the figures
with their significant regions, tables of clusters and comparisons, the fMRI maps, and
the parameters, seeds and software versions that reproduce every figure. Images are
embedded as base64 data URIs and the page loads nothing from elsewhere, so it works
offline, opened from a file.

fMRI maps: nilearn's ``view_img`` viewer of ``peak_z`` (its scripts, jQuery and
brainsprite, are inlined by nilearn; the one external link it holds, a favicon, is
removed), inside an ``iframe`` whose ``srcdoc`` holds the viewer's page; with
``static=True``, or without nilearn, the static slices instead.

Cluster names. For a session on a stimulus set with ROI masks (the embedded faces:
eyes, brows, nose, mouth; :func:`analysis.fmri.stimulus.stimulus_rois`), each
significant cluster is named by the ROI parts it overlaps (eyes and brows split into
the image's left and right, see :func:`region_names`); otherwise by its place in the
image (upper left, centre, ...).
"""

from __future__ import annotations

import base64
import datetime
import importlib.metadata
import io
import json
import os
import platform
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from .diagnostic import load_image
from .figures import plot_diagnostic_image
from .fmri.stimulus import stimulus_rois
from .session_files import read_session
from .trials import TrialTable

__all__ = ["Results", "Report", "collect", "build_report", "region_names", "SOFTWARE"]

#: Distributions whose versions the report lists (those installed).
SOFTWARE = ("bubbles-toolkit", "numpy", "scipy", "pandas", "matplotlib", "jinja2",
            "nibabel", "nilearn", "zarr", "torch", "captum", "psychopy")
SKIP_DIRS = (".zarr",)


@dataclass
class Results:
    """What :func:`collect` found under ``root`` (lists of dicts, in path order)."""

    root: Path
    sessions: list = field(default_factory=list)
    analyses: list = field(default_factory=list)
    probes: list = field(default_factory=list)
    attributions: list = field(default_factory=list)
    images: list = field(default_factory=list)
    comparisons: list = field(default_factory=list)
    fmri: list = field(default_factory=list)
    plans: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    @property
    def empty(self):
        return not any((self.sessions, self.analyses, self.probes, self.attributions,
                        self.images, self.comparisons, self.fmri, self.plans, self.figures))


@dataclass
class Report:
    """What :func:`build_report` returns: the page and what it was made from."""

    html: str
    results: Results
    summary: list
    notes: list


# -- reading ------------------------------------------------------------------------------
def _json(path, results):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        results.problems.append(f"{path}: not readable JSON ({err})")
        return None


def _rel(path, root):
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def collect(root):
    """Find every result under ``root`` (see the module). Unreadable files are listed
    in ``problems`` and skipped; nothing is written.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {str(root)!r} does not exist or is not "
                                "a folder")
    res = Results(root=root)
    claimed = set()
    pngs = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(SKIP_DIRS))
        here = Path(folder)
        names = set(files)
        if "summary.json" in names and "peak_z.nii.gz" in names:
            _fmri(here, res, claimed)
        if "plan.json" in names:
            _plan(here, res, claimed)
        for name in sorted(names):
            path = here / name
            if name.endswith(".png"):
                pngs.append(path)
            elif name == "compare.json":
                _comparison(path, res, claimed)
            elif name.endswith(".json") and path not in claimed:
                _json_result(path, res, claimed)
    res.figures = [{"path": p, "name": _rel(p, root)} for p in pngs if p not in claimed]
    res.sessions = _unique_sessions(res.sessions)
    return res


def _unique_sessions(sessions):
    """One entry per session: copies (a BIDS study's ``sourcedata``) are folded into
    the original, listed in its ``copies``."""
    kept = {}
    for s in sorted(sessions, key=lambda s: ("sourcedata" in Path(s["name"]).parts,
                                             len(Path(s["name"]).parts))):
        key = (s["participant"], s["date"], json.dumps(s["seeds"], sort_keys=True),
               s["n_trials"])
        if key in kept:
            kept[key]["copies"].append(s["name"])
        else:
            kept[key] = dict(s, copies=[])
    return sorted(kept.values(), key=lambda s: s["name"])


def _json_result(path, res, claimed):
    try:
        head = path.read_text(encoding="utf-8")[:400]
    except (OSError, UnicodeDecodeError):
        return
    if '"bubbles.session"' in head:
        _session(path, res, claimed)
    elif '"bubbles.DiagnosticImage"' in head:
        _diagnostic(path, res, claimed)


def _session(path, res, claimed):
    try:
        read = read_session(path, centers=False)
    except (OSError, ValueError) as err:
        res.problems.append(f"session {path}: {err}")
        return
    side, rows = read.sidecar, read.rows
    main = [r for r in rows if r.get("block") == "main"] or rows
    correct = [float(r["correct"]) for r in main if r.get("correct") not in (None, "")]
    counts = [float(r["n_bubbles"]) for r in main if r.get("n_bubbles") not in (None, "")]
    run = (side.get("runs") or [{}])[0]
    simulate = run.get("simulate")
    kind = {"template": "simulated person (template observer)",
            "model": "network observer", "scripted": "scripted responder",
            None: "person"}.get(simulate, f"simulated ({simulate})")
    csv = read.paths["csv"]
    claimed.update(p for p in read.paths.values())
    res.sessions.append({
        "path": csv, "name": _rel(csv, res.root), "participant": side.get("participant"),
        "kind": kind, "simulate": run.get("simulate"), "status": side.get("status"),
        "n_trials": len(rows), "n_main": len(main),
        "blocks": {b: sum(r.get("block") == b for r in rows)
                   for b in dict.fromkeys(r.get("block") for r in rows)},
        "accuracy": float(np.mean(correct)) if correct else None,
        "mean_bubbles": float(np.mean(counts)) if counts else None,
        "last_bubbles": counts[-1] if counts else None,
        "seed": side.get("seed"), "seeds": side.get("seeds"),
        "responder_seed": run.get("responder_seed"),
        "spec": side.get("spec"), "quest": (side.get("config") or {}).get("quest"),
        "stimuli": (side.get("config") or {}).get("stimuli"),
        "versions": side.get("versions") or run.get("versions"),
        "date": side.get("date"), "dropped": read.dropped})


def _diagnostic(path, res, claimed):
    stem = path.with_suffix("")
    meta = _json(path, res)
    if meta is None:
        return
    png = stem.with_suffix(".png")
    summary = path.parent / "summary.json"
    item = {"stem": stem, "name": _rel(stem, res.root), "meta": meta,
            "png": png if png.is_file() else None, "info": meta.get("info") or {}}
    claimed.update(p for p in (path, png, stem.with_suffix(".npz")))
    if path.name == "ci.json" and summary.is_file():
        item["summary"] = _json(summary, res) or {}
        claimed.add(summary)
        item["folder"] = path.parent
        res.analyses.append(item)
    elif meta.get("observer") == "unit":
        res.probes.append(item)
    elif item["info"].get("attribution"):
        res.attributions.append(item)
    else:
        res.images.append(item)


def _comparison(path, res, claimed):
    data = _json(path, res)
    if data is None:
        return
    png = path.with_name("compare.png")
    claimed.update((path, png))
    res.comparisons.append({"path": path, "name": _rel(path.parent, res.root),
                            "data": data, "png": png if png.is_file() else None})


def _fmri(folder, res, claimed):
    data = _json(folder / "summary.json", res)
    if data is None:
        return
    claimed.update(folder / n for n in ("summary.json", "roi_ci.json", "roi_ci.npz"))
    pngs = sorted(folder.glob("*.png"))
    claimed.update(pngs)
    res.fmri.append({"folder": folder, "name": _rel(folder, res.root) or ".",
                     "data": data, "pngs": pngs})


def _plan(folder, res, claimed):
    data = _json(folder / "plan.json", res)
    if data is None:
        return
    pngs = sorted(folder.glob("*.png"))
    claimed.update([folder / "plan.json"] + pngs)
    res.plans.append({"folder": folder, "name": _rel(folder, res.root) or ".",
                      "data": data, "pngs": pngs})


# -- what the maps show -------------------------------------------------------------------
SHARE = 0.3          # a ROI part named with a cluster holds >= 30 % of its best overlap


def _place(centroid, shape):
    """'the upper left of the image', 'the lower part of the image', ... from a
    centroid (row, col)."""
    r, c = centroid[0] / shape[0], centroid[1] / shape[1]
    v = "upper" if r < 0.45 else "lower" if r > 0.55 else ""
    h = "left" if c < 0.45 else "right" if c > 0.55 else ""
    if v and h:
        return f"the {v} {h} of the image"
    if v or h:
        return f"the {v} part of the image" if v else f"the {h} side of the image"
    return "the centre of the image"


def _roi_parts(rois):
    """(noun, side) -> bool map; eyes and brows split into the image's left and right
    (side None for the others)."""
    parts = {}
    singular = {"eyes": "eye", "brows": "brow"}
    for name, m in rois.items():
        lab, n = ndimage.label(m)
        if name in singular and n == 2:
            cols = [np.argwhere(lab == k + 1)[:, 1].mean() for k in range(2)]
            for k, side in zip(np.argsort(cols), ("left", "right")):
                parts[(singular[name], side)] = lab == k + 1
        else:
            parts[(name, None)] = np.asarray(m, bool)
    return parts


def _part_names(keys):
    """'the brow and eye on the image's left', 'the eyes and the mouth', ..."""
    keys = list(keys)
    plural = {"eye": "eyes", "brow": "brows"}
    for noun in plural:                       # both sides: 'the eyes'
        if (noun, "left") in keys and (noun, "right") in keys:
            i = min(keys.index((noun, "left")), keys.index((noun, "right")))
            keys = [k for k in keys if k[0] != noun]
            keys.insert(i, (plural[noun], None))
    sides = {side for _, side in keys}
    if len(sides) == 1 and None not in sides:
        return f"the {_join([noun for noun, _ in keys])} on the image's {sides.pop()}"
    return _join([f"the {noun}" + (f" on the image's {side}" if side else "")
                  for noun, side in keys])


def region_names(z, clusters, *, threshold, rois=None, connectivity=8):
    """A name for each cluster (dicts of :meth:`analysis.stats.Cluster.to_dict`): the
    ROI parts its pixels overlap (those holding at least 30 % of the largest overlap),
    else its place in the image.

    The cluster's pixels are the connected set of ``sign * z >= threshold`` holding its
    peak (the cluster test's own definition).

    Examples
    --------
    >>> z = np.zeros((8, 8)); z[1:3, 1:3] = 4
    >>> c = {"peak": [1, 1], "centroid": [1.5, 1.5], "sign": 1}
    >>> region_names(z, [c], threshold=2.7)
    ['the upper left of the image']
    >>> region_names(z, [c], threshold=2.7, rois={"mouth": z > 0})
    ['the mouth']
    """
    z = np.asarray(z, float)
    parts = _roi_parts(rois) if rois else {}
    structure = np.ones((3, 3)) if connectivity == 8 else None
    names = []
    for c in clusters:
        sign = c.get("sign", 1) or 1
        lab, _ = ndimage.label(sign * z >= threshold, structure=structure)
        r, col = (int(v) for v in c["peak"][-2:])
        pix = lab == lab[r, col] if lab[r, col] else np.zeros(z.shape, bool)
        hits = {key: int((pix & m).sum()) for key, m in parts.items()}
        top = max(hits.values(), default=0)
        keys = sorted((k for k, v in hits.items() if top and v >= SHARE * top),
                      key=lambda k: -hits[k])
        names.append(_part_names(keys) if keys else _place(c["centroid"][-2:], z.shape))
    return names


def _map_name(path):
    """A map's name from its path: its folder for ``.../NAME/ci.npz``, else its stem."""
    p = Path(str(path or "?"))
    stem = p.stem if p.suffix in (".npz", ".json") else p.name
    return p.parent.name if stem == "ci" and p.parent.name else stem


def _join(words):
    words = list(dict.fromkeys(words))
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


# -- the report ---------------------------------------------------------------------------
def _data_uri(data, mime="image/png"):
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _png_file(path):
    return _data_uri(Path(path).read_bytes())


def _png_figure(fig, dpi=100):
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    fig.clear()
    return _data_uri(buf.getvalue())


def _fmt(v, digits=3):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def software_versions():
    """name -> version of the installed distributions in :data:`SOFTWARE`, and Python."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in SOFTWARE:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


class _Builder:
    """Turns :class:`Results` into the template's context."""

    def __init__(self, results, static):
        self.res = results
        self.static = static
        self.notes = list(results.problems)
        self._rois = {}
        self._tables = {}

    # sessions -------------------------------------------------------------------------
    def session_of(self, path):
        if not path:
            return None
        for s in self.res.sessions:
            if Path(s["path"]).resolve() == Path(path).resolve():
                return s
        return None

    def rois_for(self, session_path, shape):
        """The stimulus ROIs of a session's stimuli at ``shape`` (None when the session
        is gone or has no stimulus set with ROIs)."""
        if not session_path or not Path(session_path).is_file():
            return None
        key = (str(session_path), tuple(shape))
        if key not in self._rois:
            try:
                table = self._tables.get(session_path) or TrialTable.read(session_path)
                self._tables[session_path] = table
                source = (((table.sidecar or {}).get("config") or {}).get("stimuli")
                          or {}).get("source")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    self._rois[key] = stimulus_rois(table, shape) if source else None
            except (OSError, ValueError, KeyError) as err:
                self.notes.append(f"no stimulus ROIs for {session_path}: {err}")
                self._rois[key] = None
        return self._rois[key]

    # analyses -------------------------------------------------------------------------
    def analysis(self, item):
        s, meta = item.get("summary") or {}, item["meta"]
        bands = s.get("bands") or ([{"band": 0, "sigma": s.get("sigma"),
                                     "pixel_test": s.get("pixel_test"),
                                     "cluster_test": s.get("cluster_test")}]
                                   if s.get("pixel_test") else [])
        session = self.session_of(s.get("session"))
        external = meta.get("method") == "external"
        label = (session["participant"] if session else
                 f"{Path(s.get('source', item['name'])).stem} (published image)" if external
                 else item["folder"].name)
        z = None
        try:
            z = load_image(item["stem"]).maps()[0]
        except (OSError, ValueError) as err:
            self.notes.append(f"{item['name']}: map not readable ({err})")
        rois = None
        if z is not None and s.get("session"):
            rois = self.rois_for(s.get("session"), z.shape[-2:])
        clusters = []
        for b in bands:
            clu = b.get("cluster_test") or {}
            sig = [c for c in clu.get("clusters", []) if c.get("significant")]
            names = (region_names(z[b.get("band", 0)], sig, threshold=clu["threshold"],
                                  rois=rois, connectivity=clu.get("connectivity", 8))
                     if z is not None and sig else ["" for _ in sig])
            for c, name in zip(sig, names):
                clusters.append({"band": b.get("band", 0) + 1, "where": name,
                                 "size": c["size"], "peak_z": c["peak_z"],
                                 "peak": tuple(c["peak"][-2:]), "p": c["p_value"]})
        n_clu = len(clusters)
        pix = sum((b.get("pixel_test") or {}).get("n_significant", 0) for b in bands)
        acc = s.get("accuracy")
        head = f"{label}"
        facts = []
        if session:
            facts.append(session["kind"])
        if s.get("n_trials"):
            facts.append(f"{s['n_trials']:,} trials")
        if acc is not None:
            facts.append(f"{100 * acc:.1f} % correct")
        if facts:
            head += f" ({', '.join(facts)})"
        if n_clu:
            shown = sorted(clusters, key=lambda c: -c["size"])[:4]
            parts = [f"{c['where']} ({c['size']:,} px)" for c in shown]
            if n_clu > len(shown):
                parts.append(f"{n_clu - len(shown)} smaller")
            glue = "; " if any(" and " in c["where"] for c in shown) else " and "
            listing = (glue.join(parts) if glue == "; " else _join(parts))
            text = (f"{head}: the map is significant at {listing}" if n_clu == 1 else
                    f"{head}: the map is significant in {n_clu} clusters: {listing}")
        elif pix:
            text = f"{head}: {pix:,} significant pixels, no significant cluster"
        else:
            text = f"{head}: nothing significant (pixel and cluster tests, p = " \
                   f"{(bands[0]['pixel_test'] or {}).get('p', 0.05) if bands else 0.05:g})"
        if s.get("warnings"):
            self.notes += [f"{item['name']}: {w}" for w in s["warnings"]]
        return {"name": item["name"], "label": label, "sentence": text,
                "image": self.image_of(item), "clusters": clusters,
                "tests": [{"band": b.get("band", 0) + 1, "sigma": b.get("sigma"),
                           "pixel": (b.get("pixel_test") or {}).get("threshold"),
                           "n_pixels": (b.get("pixel_test") or {}).get("n_significant"),
                           "cluster": (b.get("cluster_test") or {}).get("min_cluster_size"),
                           "t_c": (b.get("cluster_test") or {}).get("threshold")}
                          for b in bands],
                "params": self.analysis_params(item, s, session),
                "command": self.analysis_command(item, s)}

    def image_of(self, item, title=None):
        if item.get("png"):
            return _png_file(item["png"])
        try:
            img = load_image(item["stem"])
            if img.n_targets > 1:
                return None
            return _png_figure(plot_diagnostic_image(img, title=title or item["name"]))
        except (OSError, ValueError) as err:
            self.notes.append(f"{item['name']}: no figure ({err})")
            return None

    def analysis_params(self, item, s, session):
        p = {"method": s.get("method") or item["meta"].get("method"),
             "response": s.get("response"), "block": s.get("block"),
             "null": s.get("null"), "trials": s.get("n_trials")}
        if s.get("spec"):
            spec = s["spec"]
            p.update(sigma=spec.get("sigma"), n_bubbles=spec.get("n_bubbles"),
                     bands=spec.get("bands"), background=spec.get("background"))
        if s.get("source"):
            p.update(source=s.get("source"), search_region=s.get("search_region"),
                     zscore=s.get("zscore"), sigma=s.get("sigma"))
        if session:
            p.update(session_seed=session["seed"], mask_seed=(session["seeds"] or {}).get(
                "mask_seed"), responder_seed=session["responder_seed"])
        return {k: v for k, v in p.items() if v is not None}

    def analysis_command(self, item, s):
        out = _rel(item["folder"], self.res.root)
        if s.get("source"):
            cmd = f"bubbles analyze --ci {s['source']}"
            if s.get("search_region"):
                cmd += f" --search-region {s['search_region']}"
            return cmd + f" --sigma {_fmt(s.get('sigma'))} --out {out}"
        if not s.get("session"):
            return None
        cmd = f"bubbles analyze {s['session']} --out {out} --method {s.get('method')}"
        if s.get("response") not in (None, "correct"):
            cmd += f" --response {s['response']}"
        if s.get("block"):
            cmd += f" --block {s['block']}"
        if s.get("null") not in (None, "analytic"):
            cmd += f" --null {s['null']}"
        return cmd

    # network ----------------------------------------------------------------------------
    def probe(self, item):
        info, meta = item["info"], item["meta"]
        peaks = []
        try:
            img = load_image(item["stem"])
            m = img.maps()
            peak = np.nanmax(np.abs(m.reshape(len(m), -1)), axis=1)
            order = np.argsort(-peak)[:8]
            peaks = [{"name": img.names[i], "peak": float(peak[i])} for i in order]
        except (OSError, ValueError) as err:
            self.notes.append(f"{item['name']}: units not readable ({err})")
        n = (meta.get("shape") or [0])[0]
        sentence = (f"network units ({info.get('model', 'model')} {info.get('layer', '')}, "
                    f"{n} units, {meta.get('n_trials', 0):,} bubbled images)")
        params = {k: info.get(k) for k in ("model", "layer", "response", "mask_seed",
                                             "n_masks", "n_images") if info.get(k) is not None}
        spec = meta.get("spec") or {}
        params.update({k: spec.get(k) for k in ("sigma", "n_bubbles") if spec.get(k)})
        return {"name": item["name"], "sentence": sentence, "image": self.image_of(item),
                "peaks": peaks, "params": params}

    def attribution(self, item):
        info = item["info"]
        params = {k: v for k, v in info.items() if k in (
            "attribution", "stimulus", "layer", "baseline", "n_steps", "measure",
            "window", "stride", "quadrature") and v is not None}
        return {"name": item["name"], "image": self.image_of(item), "params": params,
                "title": f"{info.get('attribution', item['meta'].get('method'))} of "
                         f"{info.get('stimulus', '?')}"}

    # comparisons ------------------------------------------------------------------------
    def comparison(self, item):
        d = item["data"]
        ceiling = (d.get("ceiling") or {}).get("value")
        single = len(d.get("targets") or []) == 1
        a, b = _map_name(d.get("a")), _map_name(d.get("b"))
        best = b if single else d.get("best")
        rows = [{"name": best, "r": d.get("pearson_best"), "rho": d.get("spearman_best"),
                 "note": "B" if single else f"best of {len(d.get('targets') or [])} "
                                            f"targets of {b}"}]
        rows += [{"name": k, "r": v, "rho": None, "note": "figure panel"}
                 for k, v in (d.get("panels") or {}).items()]
        n_t = len(d.get("targets") or [])
        text = (f"{b} matches {a}'s map: " if single else
                f"{best}, the best of the {n_t} maps of {b}, matches {a}'s map: ") + \
            f"r = {d.get('pearson_best', 0):.2f}"
        if ceiling is not None:
            text += (f" against a noise ceiling of {ceiling:.2f} "
                     f"({100 * (d.get('score_over_ceiling') or 0):.0f} % of it)")
        if d.get("p_value") is not None:
            text += f", permutation p = {d['p_value']:.2g}"
        info = d.get("info") or {}
        params = {"a": d.get("a"), "b": d.get("b"), "trials": d.get("trials"),
                  **{k: info.get(k) for k in ("method", "response", "block", "n_trials",
                                               "n_permutations", "smoothing")}}
        if d.get("ceiling"):
            params.update(n_splits=d["ceiling"].get("n_splits"),
                          ceiling=d["ceiling"].get("kind"))
        return {"name": item["name"], "sentence": text, "rows": rows,
                "ceiling": d.get("ceiling"), "p": d.get("p_value"),
                "image": _png_file(item["png"]) if item["png"] else None,
                "params": {k: v for k, v in params.items() if v is not None},
                "command": f"bubbles compare {d.get('a')} {d.get('b')} --out {item['name']}"}

    # fMRI -------------------------------------------------------------------------------
    def fmri(self, item):
        d, folder = item["data"], item["folder"]
        n_sig, n_vox = d.get("n_voxels_significant", 0), d.get("n_voxels", 0)
        strongest = d.get("strongest_voxels") or []
        roi_keys = [k for k in (strongest[0] if strongest else {}) if k.startswith("roi_")]
        best_roi = {}
        for v in strongest:
            if roi_keys:
                k = max(roi_keys, key=lambda k: v[k])
                best_roi.setdefault(k[4:-2], []).append(v)
        text = (f"voxels ({item['name']}): {n_sig:,} of {n_vox:,} voxels have a "
                f"significant image (|z| ≥ {_fmt(d.get('threshold'))}; "
                f"{d.get('n_trials', 0):,} trials in {d.get('n_runs', '?')} runs)")
        if strongest and roi_keys:
            top = strongest[0]
            k = max(roi_keys, key=lambda k: top[k])
            text += (f"; the strongest, {tuple(top['ijk'])}, reads the {k[4:-2]} "
                     f"(peak |z| {top['peak_z']:.1f})")
            if len(strongest) > 1:
                counts = sorted(((len(v), roi) for roi, v in best_roi.items()), reverse=True)
                text += (f"; of the {len(strongest)} strongest, "
                         + _join([f"{n} read the {roi}" for n, roi in counts]))
        viewer, static, how = None, [], ""
        if not self.static:
            viewer, how = self.viewer(folder, d)
        if viewer is None:
            static = [{"name": p.name, "src": _png_file(p)} for p in item["pngs"]]
            if not static:
                png = self.slices(folder)
                static = [{"name": "peak_z (slices)", "src": png}] if png else []
        else:
            static = [{"name": p.name, "src": _png_file(p)} for p in item["pngs"]
                      if p.name != "peak_z.png"]
        params = {k: d.get(k) for k in ("n_trials", "n_runs", "resolution", "sigma_px",
                                          "threshold", "correction", "covariates", "mask",
                                          "session") if d.get(k) is not None}
        return {"name": item["name"], "sentence": text, "viewer": viewer, "how": how,
                "static": static, "strongest": strongest[:10], "roi_keys": roi_keys,
                "regions": d.get("regions") or [], "params": params,
                "runs": d.get("runs") or []}

    def viewer(self, folder, d):
        """(srcdoc HTML of nilearn's view_img of peak_z, a sentence) or (None, why)."""
        try:
            from nilearn import plotting
            from nilearn.image import index_img
        except ImportError:
            self.notes.append("nilearn is not installed: fMRI maps shown as static slices")
            return None, ""
        bg = False
        runs = d.get("runs") or []
        if runs and Path(runs[0].get("bold", "")).is_file():
            bg = index_img(runs[0]["bold"], 0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                view = plotting.view_img(str(folder / "peak_z.nii.gz"), bg_img=bg,
                                         threshold=d.get("threshold"), cmap="hot",
                                         symmetric_cmap=False, black_bg=True,
                                         title="peak |z| of each voxel's image",
                                         width_view=600)
            page = view.get_standalone()
        except (OSError, ValueError, TypeError) as err:
            self.notes.append(f"{folder}: nilearn's viewer failed ({err}); static slices "
                              "shown")
            return None, ""
        # the page's one external resource: nilearn's favicon (nothing may load offline)
        page = re.sub(r"<link[^>]*rel=\"icon\"[^>]*>", "", page, flags=re.S)
        if re.search(r"(src|href)\s*=\s*[\"']https?://", page):
            self.notes.append(f"{folder}: nilearn's viewer loads files from the web; "
                              "static slices shown instead")
            return None, ""
        return page, ("nilearn view_img (interactive: click to move the cursor); "
                      f"threshold |z| {_fmt(d.get('threshold'))}")

    def slices(self, folder):
        try:
            import nibabel as nib
        except ImportError:
            self.notes.append(f"{folder}: nibabel is not installed: no fMRI slices")
            return None
        vol = np.asarray(nib.load(str(folder / "peak_z.nii.gz")).dataobj, float)
        i, j, k = np.unravel_index(int(np.argmax(vol)), vol.shape)
        fig = Figure(figsize=(9, 3), layout="constrained")
        axes = fig.subplots(1, 3)
        top = float(vol.max()) or 1.0
        for ax, cut, name in zip(axes, (vol[i].T, vol[:, j].T, vol[:, :, k].T),
                                 (f"x = {i}", f"y = {j}", f"z = {k}")):
            im = ax.imshow(cut, origin="lower", cmap="hot", vmin=0, vmax=top)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
        fig.colorbar(im, ax=list(axes), label="peak |z|", shrink=0.8)
        return _png_figure(fig)

    # plans ------------------------------------------------------------------------------
    def plan(self, item):
        d = item["data"]
        rec = d.get("recommendation") or []
        return {"name": item["name"], "kind": d.get("kind"), "observer": d.get("observer"),
                "recommendation": [r.get("text") for r in rec if isinstance(r, dict)],
                "headline": [f"plan ({item['name']}, {d.get('observer')} observer): "
                             + r.get("text", "") for r in rec
                             if isinstance(r, dict) and r.get("test") == "cluster"],
                "images": [{"name": p.name, "src": _png_file(p)} for p in item["pngs"]],
                "cells": d.get("cells") or [], "quest": d.get("quest") or {},
                "params": d.get("info") or {}}


def build_report(root, *, static=False, title=None) -> Report:
    """The HTML page of the results under ``root`` (see the module).

    Parameters
    ----------
    root : path
        A results folder (any subset of the steps).
    static : bool
        fMRI maps as static slices instead of nilearn's interactive viewer.
    title : str, optional

    Returns
    -------
    Report
        ``html`` (str), the :class:`Results`, the summary sentences and notes.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    ValueError
        Nothing under ``root`` is a result of the toolkit.

    Examples
    --------
    >>> report = build_report("results/demo")                  # doctest: +SKIP
    >>> report.summary[0]                                       # doctest: +SKIP
    'person (simulated person (template observer), 1,500 trials, 80.1 % correct): ...'
    """
    res = collect(root)
    if res.empty:
        raise ValueError(f"{str(root)!r} holds no result of the toolkit (no session "
                         "sidecar, diagnostic image, compare.json, fMRI summary.json or "
                         "plan.json)")
    b = _Builder(res, static)
    analyses = [b.analysis(a) for a in res.analyses]
    probes = [b.probe(p) for p in res.probes]
    attributions = [b.attribution(a) for a in res.attributions]
    others = [{"name": i["name"], "image": b.image_of(i),
               "observer": i["meta"].get("observer")} for i in res.images]
    comparisons = [b.comparison(c) for c in res.comparisons]
    fmri = [b.fmri(f) for f in res.fmri]
    plans = [b.plan(p) for p in res.plans]
    summary = ([a["sentence"] for a in analyses] + [p["sentence"] for p in probes]
               + [c["sentence"] for c in comparisons] + [f["sentence"] for f in fmri]
               + [r for p in plans for r in p["headline"]])
    ran = []
    if res.sessions:
        ran.append(f"{len(res.sessions)} session{'s' * (len(res.sessions) > 1)} ("
                   + ", ".join(f"{s['participant']}: {s['n_main']:,} main trials"
                               for s in res.sessions) + ")")
    for items, one, many in ((analyses, "diagnostic image", "diagnostic images"),
                             (probes, "probe of network units", "probes of network units"),
                             (attributions, "attribution map", "attribution maps"),
                             (comparisons, "comparison", "comparisons"),
                             (fmri, "fMRI analysis", "fMRI analyses"), (plans, "plan", "plans")):
        if items:
            ran.append(f"{len(items)} {one if len(items) == 1 else many}")
    env = jinja2.Environment(loader=jinja2.PackageLoader("analysis", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["num"] = _fmt
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=1, default=str)
    page = env.get_template("report.html.j2").render(
        title=title or f"bubbles report: {res.root.resolve().name}",
        root=str(res.root.resolve()),
        generated=datetime.datetime.now().isoformat(timespec="seconds"),
        ran=ran, summary=summary, sessions=res.sessions, analyses=analyses,
        probes=probes, attributions=attributions, others=others, comparisons=comparisons,
        fmri=fmri, plans=plans,
        figures=[{"name": f["name"], "src": _png_file(f["path"])} for f in res.figures],
        software=software_versions(), notes=b.notes, static=static)
    return Report(html=page, results=res, summary=summary, notes=b.notes)
