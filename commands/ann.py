"""``bubbles ann``: train the embedded CNN, probe units with bubbles, attribute.

::

    bubbles ann train [--out DIR] [--seed 0] [--epochs 30]
    bubbles ann probe --layer features.relu3 --n-masks 2000 --out DIR
    bubbles ann attribute --method occlusion|saliency|ig --out DIR

The lead's dispatcher (``bubbles.cli``) calls :func:`main` with the arguments after
``ann``. Exit codes: 0 done, 1 a data or setup error (missing or existing files, a layer
or stimulus that is not there, a model that cannot be built), 2 a usage error (argparse:
a missing or malformed option). Every command defaults to the embedded model
(``--model default``) and the embedded face set; ``--model`` also takes a checkpoint
written by ``bubbles ann train`` or ``package.module:factory`` (a callable returning an
``nn.Module``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "load_any_model"]


def load_any_model(spec: str, device="cpu"):
    """``'default'`` | path to a saved ExpressionCNN | ``'module:factory'``."""
    from .model import load_default_model, load_model

    if spec in (None, "", "default"):
        return load_default_model(device=device)
    path = Path(spec)
    if path.suffix in (".pt", ".pth") or path.is_file():
        sha = path.with_suffix(".sha256")
        return load_model(path, checksum=sha if sha.is_file() else None, device=device)
    if ":" in spec:
        mod, _, attr = spec.partition(":")
        try:
            model = getattr(importlib.import_module(mod), attr)()
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"--model {spec!r}: cannot build the model ({exc})") from None
        return model.to(device).eval()
    raise ValueError(f"--model must be 'default', a .pt file or 'module:factory', got {spec!r}")


def _images(args, *, one_per_expression=False):
    """(images, ids) from --images (.npy) or the embedded faces (+ --stimulus); with
    ``one_per_expression`` and neither option, the first face of each expression."""
    if args.images:
        arr = np.load(args.images).astype(np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        ids = [f"image{i}" for i in range(len(arr))]
    else:
        from bubbles.faces import face_set
        s = face_set(args.identities, seed=args.face_seed, size=args.size)
        arr, ids = s.images, list(s.table["stimulus_id"])
        if one_per_expression and not args.stimulus:
            first = s.table.groupby("expression", sort=False).head(1).index.to_numpy()
            arr, ids = arr[first], [ids[i] for i in first]
    if args.stimulus:
        missing = [x for x in args.stimulus if x not in ids]
        if missing:
            raise ValueError(f"--stimulus must name stimuli of the set (e.g. {ids[:3]}), "
                             f"got {missing}")
        keep = [ids.index(x) for x in args.stimulus]
        arr, ids = arr[keep], [ids[i] for i in keep]
    return np.ascontiguousarray(arr, dtype=np.float32), ids


def _units_text(text):
    """argparse type of --units: checks the syntax, keeps the text (written to info)."""
    try:
        _units(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'all', an index '3', a slice '0:8' or "
                                         f"a list '1,4,9', got {text!r}") from None
    return text


def _position(text):
    """argparse type of --position: 'row,col' -> (row, col)."""
    try:
        r, c = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'row,col' in the feature map, got "
                                         f"{text!r}") from None
    return r, c


def _units(text):
    """'all' | '3' | '0:8' | '1,4,9' -> as accepted by ann_bridge.record.as_units."""
    if text in (None, "", "all"):
        return None
    try:
        if ":" in text:
            a, _, b = text.partition(":")
            return slice(int(a) if a else None, int(b) if b else None)
        if "," in text:
            return [int(x) for x in text.split(",") if x]
        return int(text)
    except ValueError:
        raise ValueError(f"--units must be 'all', an index '3', a slice '0:8' or a list "
                         f"'1,4,9', got {text!r}") from None


def _common(p, *, stimulus_help):
    p.add_argument("--model", default="default",
                   help="'default' (embedded CNN), a .pt checkpoint or module:factory")
    p.add_argument("--images", help=".npy file of images (N, H, W) in [0, 1]; default: "
                   "the embedded face set")
    p.add_argument("--identities", type=int, default=20, help="embedded faces: identities")
    p.add_argument("--face-seed", type=int, default=0, help="embedded faces: seed")
    p.add_argument("--size", type=int, default=256, help="embedded faces: size in pixels")
    p.add_argument("--stimulus", action="append", help=stimulus_help)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true", help="replace existing outputs in --out")


def _parser():
    p = argparse.ArgumentParser(prog="bubbles ann", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the expression CNN with bubbles augmentation")
    t.add_argument("--out", default="results/ann_train",
                   help="folder for expression_cnn.pt, .sha256 and metrics.json")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--identities", type=int, default=200, help="training identities")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--force", action="store_true",
                   help="replace existing outputs in --out (needed to write into the "
                        "embedded weights' folder)")

    pr = sub.add_parser("probe", help="diagnostic images of units from bubbles masks")
    _common(pr, stimulus_help="stimulus id to use (repeat); default: every image")
    pr.add_argument("--layer", required=True, help="layer name (see --list-layers)")
    pr.add_argument("--units", default="all", type=_units_text,
                    help="'all', '3', '0:8' or '1,4,9'")
    pr.add_argument("--position", type=_position,
                    help="'row,col' in the feature map (default: spatial mean)")
    pr.add_argument("--n-masks", type=int, required=True, help="bubbled trials")
    pr.add_argument("--seed", type=int, default=0, help="mask seed")
    pr.add_argument("--spec", help="BubbleSpec JSON file (overrides --sigma/--n-bubbles/--bands)")
    pr.add_argument("--sigma", type=float, default=10.0, help="aperture SD in pixels")
    pr.add_argument("--n-bubbles", type=int, default=20)
    pr.add_argument("--bands", type=int, default=0, help="0 = single scale")
    pr.add_argument("--batch-size", type=int, default=128)
    pr.add_argument("--method", default="regression")
    pr.add_argument("--response", default="activation", choices=["activation", "perturbation"])
    pr.add_argument("--name", help="output stem (default: probe_<layer>)")

    a = sub.add_parser("attribute", help="occlusion, saliency or integrated gradients")
    _common(a, stimulus_help="stimulus id (repeat); default: one face per expression")
    a.add_argument("--method", required=True, choices=["occlusion", "saliency", "ig"])
    a.add_argument("--target", action="append",
                   help="output class (label or index; repeat); default: predicted class")
    a.add_argument("--layer", help="internal layer instead of the output")
    a.add_argument("--units", default="all", type=_units_text,
                   help="with --layer: 'all', '3', '0:8', '1,4'")
    a.add_argument("--occluder", type=int, default=10, help="occluder side in pixels "
                   "(Ancona et al. compare 1, 5, 10, 15)")
    a.add_argument("--stride", type=int, help="occluder stride (<= size; default: size)")
    a.add_argument("--fill", type=float, default=0.5, help="occluder grey level")
    a.add_argument("--sweep", default="cover", choices=["cover", "captum"],
                   help="occluder positions: last window flush with the edge (cover) or "
                        "captum's (clipped at the edge)")
    a.add_argument("--steps", type=int, default=50, help="IG steps")
    a.add_argument("--baseline", type=float, default=0.5, help="IG baseline grey level")
    a.add_argument("--batch-size", type=int, default=256)
    return p


def _spec(args, shape):
    from bubbles import BubbleSpec
    if args.spec:
        spec = BubbleSpec.from_json(Path(args.spec).read_text())
        if tuple(spec.shape) != tuple(shape):
            raise ValueError(f"--spec shape {spec.shape} must match the images {shape}")
        return spec
    return BubbleSpec(shape=tuple(shape), sigma=args.sigma, n_bubbles=args.n_bubbles,
                      bands=args.bands or None)


def _check_free(stems, force):
    """Refuse, before any work, to replace outputs unless --force."""
    if force:
        return
    for stem in stems:
        for ext in (".npz", ".json", ".png"):
            path = Path(str(stem) + ext)
            if path.exists():
                raise FileExistsError(f"{path} exists; use --force to replace it")


TRAIN_OUTPUTS = ("expression_cnn.pt", "expression_cnn.sha256", "metrics.json")


def _check_train_out(out, force):
    """Refuse, before training, to replace outputs or the embedded weights (no --force)."""
    from .model import DEFAULT_WEIGHTS

    if force:
        return
    if out.resolve() == DEFAULT_WEIGHTS.parent.resolve():
        raise FileExistsError(f"--out {out} is the folder of the embedded weights "
                              f"({DEFAULT_WEIGHTS.name}, checked by load_default_model); "
                              "use --force to replace them")
    for name in TRAIN_OUTPUTS:
        if (out / name).exists():
            raise FileExistsError(f"{out / name} exists; use --force to replace it")


def _train(args):
    from .model import DEFAULT_WEIGHTS, save_model, sha256
    from .train import checkpoint_info, train

    out = Path(args.out)
    _check_train_out(out, args.force)
    res = train(seed=args.seed, epochs=args.epochs, n_identities=args.identities,
                threads=args.threads, progress=not args.quiet,
                log=None if args.quiet else print)
    path = save_model(res.model, out / "expression_cnn.pt", info=checkpoint_info(res.metrics))
    (out / "metrics.json").write_text(json.dumps(res.metrics, indent=2))
    m = res.metrics
    print(f"held-out identities: accuracy {m['heldout_seed0_accuracy']:.3f} (face seed 0), "
          f"{m['heldout_seed2_accuracy']:.3f} (face seed 2)")
    print(f"bubbled accuracy: {json.dumps(m['bubbled_accuracy'])}")
    print(f"training time {m['train_seconds']:.1f} s on {m['threads']} threads (data "
          f"{m['data_seconds']:.1f} s, fitting {m['fit_seconds']:.1f} s); wrote {path}")
    if DEFAULT_WEIGHTS.is_file():
        same = sha256(path) == sha256(DEFAULT_WEIGHTS)
        print("identical to the embedded weights" if same else
              "differs bitwise from the embedded weights (another torch build or "
              "thread count changes rounding; compare the accuracies)")
    return 0


def _probe(args):
    from .probe import diagnostic_images
    from .record import Units

    stem = Path(args.out) / (args.name or f"probe_{args.layer.replace('.', '_')}")
    _check_free([stem], args.force)
    imgs, ids = _images(args)
    model = load_any_model(args.model, device=args.device or "cpu")
    spec = _spec(args, imgs.shape[1:])
    units = _units(args.units)
    if args.position:
        units = Units(channels=units, position=args.position)
    ci = diagnostic_images(model, args.layer, imgs, spec, args.n_masks, args.seed, units,
                           args.batch_size, device=args.device, method=args.method,
                           response=args.response, progress=not args.quiet)
    ci.info["stimuli"] = ids
    stem.parent.mkdir(parents=True, exist_ok=True)
    ci.save(stem, overwrite=args.force)
    bands = ci.z.ndim == 4                       # (units, bands, H, W): show the band sum
    what = f"z, sum of the {ci.z.shape[1]} bands" if bands else "z"
    _montage(ci.z.sum(axis=1) if bands else ci.z, ci.info.get("targets"),
             str(stem) + ".png", background=imgs.mean(axis=0), label="z",
             title=f"bubbles probe of {args.layer}: diagnostic image ({what}) per unit, "
                   f"{ci.n_trials} masks; red = revealing the region raises the unit")
    z = ci.z.reshape(ci.z.shape[0], -1)
    best = np.argsort(-np.abs(z).max(axis=1))[:5]
    print(f"{len(z)} units of {args.layer}, {ci.n_trials} masks -> {stem}.npz/.json/.png")
    print("strongest units (max |z|): " + ", ".join(
        f"{ci.info['targets'][i]} {np.abs(z[i]).max():.1f}" for i in best))
    return 0


def _montage(maps, names, path, *, background=None, title="", label="z", limit=32):
    """PNG of maps (n, H, W) over ``background``: one large panel with a colour bar, or
    a grid of at most ``limit`` (the strongest by max |value|), each scaled to its own
    max |value| (the suptitle says so). Figure + Agg canvas, no pyplot (no global
    figure state), as in :mod:`analysis.figures`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = np.asarray(maps, dtype=np.float64)
    names = list(names) if names else [str(i) for i in range(len(maps))]
    keep = np.arange(len(maps))
    if len(maps) > limit:
        keep = np.sort(np.argsort(-np.abs(maps.reshape(len(maps), -1)).max(axis=1))[:limit])
        title += f"\n{limit} of {len(maps)} units shown: those with the largest max |{label}|"
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
        v = float(np.abs(m).max()) or 1.0
        if background is not None:
            ax.imshow(background, cmap="gray", vmin=0, vmax=1)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-v, vmax=v,
                       alpha=0.75 if background is not None else 1.0)
        ax.set_title(str(names[i]), fontsize=6 if len(keep) > 1 else 9)
        if len(keep) == 1:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)
    fig.suptitle(title, fontsize=8 if len(keep) > 1 else 10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    finally:
        fig.clear()


def _attribute(args):
    import torch

    from analysis.diagnostic import DiagnosticImage

    from . import attribution as at

    imgs, ids = _images(args, one_per_expression=True)
    method = {"ig": "integrated_gradients"}.get(args.method, args.method)
    _check_free([Path(args.out) / f"{method}_{sid}" for sid in ids], args.force)
    model = load_any_model(args.model, device=args.device or "cpu")
    target = None
    if args.target:
        target = [int(t) if t.lstrip("-").isdigit() else t for t in args.target]
    units = _units(args.units) if args.layer else None
    # resolve the targets once (one forward pass): the method reuses them, and so do the
    # names of the targets written with each map
    read = at.Readout(model, args.layer, units, device=args.device)
    cols = read.columns(target, torch.from_numpy(imgs).to(read.device))
    names = read.target_names(cols, len(imgs))
    kw = dict(layer=args.layer, units=units, device=args.device, columns=cols)
    if args.method == "occlusion":
        maps = at.occlusion(model, imgs, target, size=args.occluder, stride=args.stride,
                            fill=args.fill, sweep=args.sweep, batch_size=args.batch_size,
                            progress=not args.quiet, **kw)
        extra = {"size": args.occluder, "stride": args.stride or args.occluder,
                 "fill": args.fill, "sweep": args.sweep}
    elif args.method == "saliency":
        maps = at.saliency(model, imgs, target, progress=not args.quiet, **kw)
        extra = {}
    else:
        res = at.integrated_gradients(model, imgs, target, baseline=args.baseline,
                                      n_steps=args.steps, progress=not args.quiet, **kw)
        maps = res.attribution
        extra = {"baseline": args.baseline, "n_steps": args.steps,
                 "completeness_gap": res.gap, "relative_gap": res.relative_gap}
        print(f"IG completeness gap: max {np.abs(res.relative_gap).max():.2%} of |F(x) - F(x')|")
    what = {"occlusion": "drop a(X) - a(X occluded)", "saliency": "|dS/dX|",
            "ig": "IG attribution"}[args.method]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, sid in enumerate(ids):
        raw = maps[i]
        flat = raw.reshape(len(raw), -1)
        sd = flat.std(axis=1)
        z = (flat - flat.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1)[:, None]
        z = z.reshape(raw.shape)
        info = {"observer": "network", "attribution": method, "stimulus": sid,
                "target": args.target, "layer": args.layer, "units": args.units,
                "z": "attribution standardised over pixels; raw holds the attribution",
                "n_targets": int(len(raw)), "responses_ndim": 2 if len(raw) > 1 else 1}
        info.update({k: (v[i] if isinstance(v, np.ndarray) else v) for k, v in extra.items()})
        info["targets"] = names[i]
        di = DiagnosticImage(z=z[0] if len(z) == 1 else z, method=method, spec=None,
                             n_trials=0, info=info, raw=raw[0] if len(raw) == 1 else raw)
        stem = out / f"{method}_{sid}"
        di.save(stem, overwrite=args.force)
        _montage(raw, names[i], str(stem) + ".png", background=imgs[i], label=what,
                 title=f"{method.replace('_', ' ')} of {sid}")
    print(f"{method}: {len(ids)} image(s) x {maps.shape[1]} target(s) -> {out}")
    return 0


def main(argv=None) -> int:
    """Entry point of ``bubbles ann``; returns the exit code (0 done, 1 a data or setup
    error, 2 a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-layers" in argv:
        from .record import layer_names
        i = argv.index("--model") if "--model" in argv else -1
        try:
            model = load_any_model(argv[i + 1] if 0 <= i < len(argv) - 1 else "default")
        except (ValueError, FileNotFoundError) as exc:
            print(f"bubbles ann: {exc}", file=sys.stderr)
            return 1
        print("\n".join(layer_names(model)))
        return 0
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:          # argparse printed the message (or --help)
        return int(exc.code or 0)
    try:
        return {"train": _train, "probe": _probe, "attribute": _attribute}[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"bubbles ann {args.command}: {exc}", file=sys.stderr)
        return 1
