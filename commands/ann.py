"""``bubbles ann``: train the embedded CNN, probe units with bubbles, attribute.

::

    bubbles ann train [--out DIR] [--seed 0] [--epochs 30]
    bubbles ann probe --layer features.relu3 --n-masks 2000 --out DIR
    bubbles ann attribute --method occlusion|saliency|ig --out DIR
    bubbles ann --list-layers [--model ...]

The commands parse, call :mod:`ann_bridge` (:func:`ann_bridge.train.train`,
:func:`ann_bridge.diagnostic_images`, the attribution functions and
:func:`ann_bridge.attribution.attribution_images`) and write what they return. Exit
statuses (:mod:`commands.common`): 0 done; 1 a data or setup error (files missing,
damaged or in the way, images outside [0, 1], a layer or stimulus that is not there, a
model that cannot be built, a ``--device`` this machine does not have); 2 a usage error
(a missing or malformed option, a value outside its range, options that do not go
together). Every command defaults to the embedded model (``--model default``) and the
embedded face set; ``--model`` also takes a checkpoint written by ``bubbles ann train``
or ``package.module:factory`` (a callable returning an ``nn.Module``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis.adaptive import AdaptivePolicy, save_densities
from analysis.ci import METHODS
from analysis.diagnostic import to_jsonable
from analysis.figures import plot_montage, save_figure
from ann_bridge.attribution import (attribution_images, integrated_gradients, occlusion,
                                    saliency)
from ann_bridge.model import (default_weights, load_default_model, load_model, save_model,
                              sha256)
from ann_bridge.probe import RESPONSES, diagnostic_images, strongest_targets
from ann_bridge.record import DEVICE_TYPES, Units, image_batch, layer_names, resolve_device
from ann_bridge.train import checkpoint_info, train
from bubbles import BubbleSpec
from bubbles.faces import face_set

from .common import DataError, integer, number, prepare_out, run_command

__all__ = ["main", "build_parser", "load_any_model", "save_probe", "save_attributions"]

MAP_FILES = (".npz", ".json", ".png")
TRAIN_OUTPUTS = ("expression_cnn.pt", "expression_cnn.sha256", "metrics.json")
ATTRIBUTIONS = {"occlusion": "occlusion", "saliency": "saliency",
                "ig": "integrated_gradients"}
OCCLUSION_OPTIONS = ("occluder", "stride", "fill", "sweep")
IG_OPTIONS = ("steps", "baseline")
FACE_OPTIONS = ("identities", "face_seed", "size")
SPEC_OPTIONS = ("sigma", "n_bubbles", "bands")


# -- option types (a malformed value is a usage error, exit 2) -------------------------
_positive = number()
_grey = number(0.0, 1.0, low_open=False, what="grey level")
_floor = number(0.0, 1.0, what="share of uniform sampling")


def _device_text(text):
    """argparse type of --device: a device name torch can parse (its availability is
    checked when the command runs: exit 1)."""
    try:
        dev = torch.device(text)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise argparse.ArgumentTypeError(f"must be one of {list(DEVICE_TYPES)} with an "
                                         f"optional ':index' (e.g. 'cuda:0'), got {text!r}")
    return text


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


def _units_text(text):
    """argparse type of --units: checks the syntax, keeps the text."""
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


# -- parser ----------------------------------------------------------------------------
def _common(p, *, stimulus_help):
    p.add_argument("--model", default="default",
                   help="'default' (embedded CNN), a .pt checkpoint or module:factory")
    p.add_argument("--images", help=".npy file of grey images (N, H, W) or (H, W) in "
                   "[0, 1]; default: the embedded face set")
    p.add_argument("--identities", type=integer(1),
                   help="embedded faces: identities (default 20)")
    p.add_argument("--face-seed", type=integer(0), help="embedded faces: seed (default 0)")
    p.add_argument("--size", type=integer(1), help="embedded faces: size in pixels "
                   "(default 256)")
    p.add_argument("--stimulus", action="append", help=stimulus_help)
    p.add_argument("--device", type=_device_text,
                   help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true", help="replace existing outputs in --out")


def build_parser():
    p = argparse.ArgumentParser(prog="bubbles ann", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the expression CNN with bubbles augmentation")
    t.add_argument("--out", default="results/ann_train",
                   help="folder for expression_cnn.pt, .sha256 and metrics.json")
    t.add_argument("--seed", type=integer(0), default=0)
    t.add_argument("--epochs", type=integer(1), default=30)
    t.add_argument("--identities", type=integer(2), default=200, help="training identities")
    t.add_argument("--threads", type=integer(1), default=2, help="torch CPU threads")
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
    pr.add_argument("--n-masks", type=integer(2), required=True, help="bubbled trials")
    pr.add_argument("--seed", type=integer(0), default=0, help="mask seed")
    pr.add_argument("--spec", help="BubbleSpec JSON file (instead of --sigma, --n-bubbles, "
                    "--bands)")
    pr.add_argument("--sigma", type=_positive, help="aperture SD in pixels (default 10)")
    pr.add_argument("--n-bubbles", type=integer(1), help="bubbles per mask (default 20)")
    pr.add_argument("--bands", type=integer(0), help="0 = single scale (default)")
    pr.add_argument("--batch-size", type=integer(1), default=128)
    pr.add_argument("--method", default="regression", choices=METHODS)
    pr.add_argument("--response", default="activation", choices=RESPONSES)
    pr.add_argument("--name", help="output stem (default: probe_<layer>)")
    pr.add_argument("--sampling", default="uniform", choices=["uniform", "adaptive"],
                    help="adaptive: each block's centres follow the units' uncertain "
                         "pixels (analysis/ADAPTIVE.md); writes <name>_densities.npz")
    pr.add_argument("--update-every", type=integer(1),
                    help="adaptive: trials per block (default 50)")
    pr.add_argument("--floor", type=_floor,
                    help="adaptive: share of uniform sampling in (0, 1] (default 0.8)")

    a = sub.add_parser("attribute", help="occlusion, saliency or integrated gradients")
    _common(a, stimulus_help="stimulus id (repeat); default: one face per expression")
    a.add_argument("--method", required=True, choices=list(ATTRIBUTIONS))
    a.add_argument("--target", action="append",
                   help="output class (label or index; repeat); default: predicted class")
    a.add_argument("--layer", help="internal layer instead of the output")
    a.add_argument("--units", type=_units_text,
                   help="with --layer: 'all' (default), '3', '0:8', '1,4'")
    a.add_argument("--occluder", type=integer(1), help="occlusion: occluder side in pixels "
                   "(default 10; Ancona et al. compare 1, 5, 10, 15)")
    a.add_argument("--stride", type=integer(1),
                   help="occlusion: stride (<= --occluder; default: --occluder)")
    a.add_argument("--fill", type=_grey, help="occlusion: occluder grey level (default 0.5)")
    a.add_argument("--sweep", choices=["cover", "captum"],
                   help="occlusion: positions whose last window is flush with the edge "
                        "(cover, default) or captum's (clipped at the edge)")
    a.add_argument("--steps", type=integer(2), help="ig: path steps (default 50)")
    a.add_argument("--baseline", type=_grey, help="ig: baseline grey level (default 0.5)")
    a.add_argument("--batch-size", type=integer(1), default=256)
    return p


def _given(args, names):
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) is not None]


def _usage(args):
    """Options that do not go together (exit 2); argparse checked each one alone."""
    if args.command == "train":
        return None
    if args.images and _given(args, FACE_OPTIONS):
        return (f"{', '.join(_given(args, FACE_OPTIONS))} choose the embedded faces and "
                "cannot be combined with --images")
    if args.command == "probe":
        if args.spec and _given(args, SPEC_OPTIONS):
            return (f"--spec gives the whole spec; {', '.join(_given(args, SPEC_OPTIONS))} "
                    "cannot be combined with it")
        adaptive = _given(args, ("update_every", "floor"))
        if adaptive and args.sampling != "adaptive":
            return f"{', '.join(adaptive)} apply only with --sampling adaptive"
        return None
    method = ATTRIBUTIONS[args.method]
    wrong = (_given(args, OCCLUSION_OPTIONS) if method != "occlusion" else []) + (
        _given(args, IG_OPTIONS) if method != "integrated_gradients" else [])
    if wrong:
        return f"{', '.join(wrong)} do(es) not apply to --method {args.method}"
    if args.layer and args.target:
        return "--target picks output classes; with --layer choose units with --units"
    if args.units is not None and not args.layer:
        return "--units needs --layer (the output classes are chosen with --target)"
    if args.stride is not None and args.stride > (args.occluder or 10):
        return (f"--stride {args.stride} must be <= --occluder {args.occluder or 10} "
                "(a larger stride leaves pixels uncovered)")
    return None


# -- inputs ----------------------------------------------------------------------------
def load_any_model(text, device="cpu") -> nn.Module:
    """``'default'`` | path to a saved ExpressionCNN | ``'module:factory'``, on
    ``device``; errors name ``--model``."""
    if text in (None, "", "default"):
        return load_default_model(device=device)
    path = Path(text)
    if path.suffix in (".pt", ".pth") or path.is_file():
        sha = path.with_suffix(".sha256")
        try:
            return load_model(path, checksum=sha if sha.is_file() else None, device=device)
        except (ValueError, OSError) as exc:
            raise DataError(f"--model: {exc}") from None
    if ":" in text:
        mod, _, attr = text.partition(":")
        try:
            model = getattr(importlib.import_module(mod), attr)()
        except Exception as exc:        # the user's factory: any failure is a setup error
            raise DataError(f"--model {text!r}: cannot build the model "
                            f"({type(exc).__name__}: {exc})") from None
        if not isinstance(model, nn.Module):
            raise DataError(f"--model {text!r}: the factory returned a "
                            f"{type(model).__name__}, not a torch.nn.Module")
        return model.to(device).eval()
    raise DataError(f"--model must be 'default', a .pt file or 'module:factory', got {text!r}")


def _device(args) -> torch.device:
    try:
        return resolve_device(args.device)
    except ValueError as exc:
        raise DataError(f"--device {args.device}: {exc}") from None


def _read_images(text) -> np.ndarray:
    """Grey images (N, H, W) from an .npy file, checked by ann_bridge's one image check
    (values in [0, 1], finite), errors naming --images and the file."""
    path = Path(text)
    name = f"--images {path}"
    if not path.is_file():
        raise DataError(f"{name}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{name} is not a readable .npy array file ({type(exc).__name__}: "
                        f"{str(exc)[:120]})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise DataError(f"{name} is an .npz archive; give one .npy array of images")
    if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        raise DataError(f"{name} of shape {arr.shape} holds colour images; bubbles ann "
                        "reads grey images (N, H, W) or (H, W): convert them to grey first")
    imgs = image_batch(arr, name=name)
    if imgs.ndim != 3:
        raise DataError(f"{name} must hold grey images (N, H, W) or (H, W), got shape "
                        f"{arr.shape}")
    return imgs.numpy()


def _images(args, *, one_per_expression=False):
    """(images, ids) from --images (.npy) or the embedded faces (+ --stimulus); with
    ``one_per_expression`` and neither option, the first face of each expression."""
    if args.images:
        arr = _read_images(args.images)
        ids = [f"image{i}" for i in range(len(arr))]
    else:
        s = face_set(20 if args.identities is None else args.identities,
                     seed=args.face_seed or 0, size=256 if args.size is None else args.size)
        arr, ids = s.images, list(s.table["stimulus_id"])
        if one_per_expression and not args.stimulus:
            first = s.table.groupby("expression", sort=False).head(1).index.to_numpy()
            arr, ids = arr[first], [ids[i] for i in first]
    if args.stimulus:
        missing = [x for x in args.stimulus if x not in ids]
        if missing:
            raise DataError(f"--stimulus must name stimuli of the set (e.g. {ids[:3]}), "
                            f"got {missing}")
        keep = [ids.index(x) for x in args.stimulus]
        arr, ids = arr[keep], [ids[i] for i in keep]
    return np.ascontiguousarray(arr, dtype=np.float32), ids


def _spec(args, shape):
    if args.spec:
        path = Path(args.spec)
        try:
            spec = BubbleSpec.load(path)          # every error names the file
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"--spec: {exc}") from None
        if tuple(spec.shape) != tuple(shape):
            raise DataError(f"--spec {path} has shape {tuple(spec.shape)}, but the images "
                            f"are {tuple(shape)}")
        return spec
    return BubbleSpec(shape=tuple(shape), sigma=10.0 if args.sigma is None else args.sigma,
                      n_bubbles=20 if args.n_bubbles is None else args.n_bubbles,
                      bands=args.bands or None)


# -- outputs ---------------------------------------------------------------------------
def save_probe(ci, stem, *, background=None, overwrite=False) -> Path:
    """Write a probe's DiagnosticImage (``stem.npz/.json``) and its montage
    (``stem.png``: up to 32 units over ``background``, band sum for multi-scale)."""
    stem = Path(stem)
    ci.save(stem, overwrite=overwrite)
    what = f"z, sum of the {ci.n_bands} bands" if ci.n_bands > 1 else "z"
    fig = plot_montage(ci.maps().sum(axis=1), ci.names, background=background, label="z",
                       title=f"bubbles probe of {ci.info.get('layer')}: diagnostic image "
                             f"({what}) per unit, {ci.n_trials} masks; red = revealing "
                             "the region raises the unit")
    save_figure(fig, stem.with_name(stem.name + ".png"))
    return stem


def save_attributions(result, stimulus_ids, images, out, *, overwrite=False) -> list:
    """Write each image's attribution (``out/<method>_<id>.npz/.json``, a DiagnosticImage
    from :func:`ann_bridge.attribution.attribution_images`) and a PNG of its maps over
    the image, in the method's own units; returns the stems."""
    stems = []
    for di, sid, image in zip(attribution_images(result, stimulus_ids), stimulus_ids, images):
        stem = Path(out) / f"{result.method}_{sid}"
        di.save(stem, overwrite=overwrite)
        fig = plot_montage(di.raw, di.targets, background=image, label=result.measure,
                           title=f"{result.method.replace('_', ' ')} of {sid}")
        save_figure(fig, stem.with_name(stem.name + ".png"))
        stems.append(stem)
    return stems


# -- commands --------------------------------------------------------------------------
def _train(args):
    out = Path(args.out)
    try:
        embedded = default_weights()
    except FileNotFoundError:
        embedded = None
    if embedded is not None and not args.force and out.resolve() == embedded.parent.resolve():
        raise DataError(f"--out {out} is the folder of the embedded weights "
                        f"({embedded.name}, checked by load_default_model); use --force to "
                        "replace them")
    out = prepare_out(out, TRAIN_OUTPUTS, force=args.force)
    res = train(seed=args.seed, epochs=args.epochs, n_identities=args.identities,
                threads=args.threads, progress=not args.quiet,
                log=None if args.quiet else print)
    path = save_model(res.model, out / "expression_cnn.pt", info=checkpoint_info(res.metrics))
    (out / "metrics.json").write_text(json.dumps(to_jsonable(res.metrics), indent=2))
    m = res.metrics
    print(f"held-out identities: accuracy {m['heldout_seed0_accuracy']:.3f} (face seed 0), "
          f"{m['heldout_seed2_accuracy']:.3f} (face seed 2)")
    print(f"bubbled accuracy: {json.dumps(m['bubbled_accuracy'])}")
    print(f"training time {m['train_seconds']:.1f} s on {m['threads']} threads (data "
          f"{m['data_seconds']:.1f} s, fitting {m['fit_seconds']:.1f} s); wrote {path}")
    if embedded is not None:
        same = sha256(path) == sha256(embedded)
        print("identical to the embedded weights" if same else
              "differs bitwise from the embedded weights (another torch build or "
              "thread count changes rounding; compare the accuracies)")


#: File name ending of an adaptive probe's densities (one per block).
DENSITIES = "_densities.npz"


def _probe(args):
    stem = args.name or f"probe_{args.layer.replace('.', '_')}"
    device = _device(args)
    imgs, ids = _images(args)
    spec = _spec(args, imgs.shape[1:])
    policy = None
    names = [stem + ext for ext in MAP_FILES]
    if args.sampling == "adaptive":
        policy = AdaptivePolicy(
            update_every=50 if args.update_every is None else args.update_every,
            floor=0.8 if args.floor is None else args.floor)
        names.append(stem + DENSITIES)
    out = prepare_out(args.out, names, force=args.force)
    model = load_any_model(args.model, device=device)
    units = _units(args.units)
    if args.position:
        units = Units(channels=units, position=args.position)
    ci = diagnostic_images(spec, model, args.layer, imgs, args.n_masks, args.seed,
                           units=units, batch_size=args.batch_size, device=device,
                           method=args.method, response=args.response, stimulus_ids=ids,
                           policy=policy, progress=not args.quiet)
    if policy is not None:      # the masks' record: GPU activations do not replay exactly
        densities = ci.info.pop("densities")
        save_densities(out / (stem + DENSITIES), densities, policy)
        ci.info["sampling"]["densities"] = stem + DENSITIES
    save_probe(ci, out / stem, background=imgs.mean(axis=0), overwrite=args.force)
    print(f"{ci.n_targets} units of {args.layer}, {ci.n_trials} masks -> "
          f"{out / stem}.npz/.json/.png" + (f" and {stem + DENSITIES}" if policy else ""))
    print("strongest units (max |z|): " + ", ".join(
        f"{name} {peak:.1f}" for name, peak in strongest_targets(ci, 5)))


def _attribute(args):
    method = ATTRIBUTIONS[args.method]
    device = _device(args)
    imgs, ids = _images(args, one_per_expression=True)
    out = prepare_out(args.out, [f"{method}_{sid}{ext}" for sid in ids for ext in MAP_FILES],
                      force=args.force)
    model = load_any_model(args.model, device=device)
    target = None
    if args.target:
        target = [int(t) if t.lstrip("-").isdigit() else t for t in args.target]
    kw = dict(layer=args.layer, units=_units(args.units) if args.layer else None,
              device=device, progress=not args.quiet)
    if method == "occlusion":
        result = occlusion(model, imgs, target, size=args.occluder or 10, stride=args.stride,
                           fill=0.5 if args.fill is None else args.fill,
                           sweep=args.sweep or "cover", batch_size=args.batch_size, **kw)
    elif method == "saliency":
        result = saliency(model, imgs, target, **kw)
    else:
        result = integrated_gradients(
            model, imgs, target, baseline=0.5 if args.baseline is None else args.baseline,
            n_steps=args.steps or 50, **kw)
        print(f"IG completeness gap: max {result.relative_gap.max():.2%} of "
              "|F(x) - F(x')|")
    save_attributions(result, ids, imgs, out, overwrite=args.force)
    print(f"{method}: {len(ids)} image(s) x {result.attribution.shape[1]} target(s) -> {out}")


def _list_layers(args):
    print("\n".join(layer_names(load_any_model(args.model, device=_device(args)))))


def main(argv=None) -> int:
    """Entry point of ``bubbles ann``; returns the exit status (0 done, 1 a data or
    setup error, 2 a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-layers" in argv:
        p = argparse.ArgumentParser(prog="bubbles ann --list-layers",
                                    description="print the layer names of a model")
        p.add_argument("--list-layers", action="store_true", required=True)
        p.add_argument("--model", default="default",
                       help="'default' (embedded CNN), a .pt checkpoint or module:factory")
        p.add_argument("--device", type=_device_text, default="cpu")
        return run_command("ann", p, _list_layers, argv)
    handlers = {"train": _train, "probe": _probe, "attribute": _attribute}
    return run_command("ann", build_parser(), lambda args: handlers[args.command](args),
                       argv, usage_check=_usage)
