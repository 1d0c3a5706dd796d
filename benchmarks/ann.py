"""Bubbles probe of every channel of a conv layer of the embedded CNN, in one run.

    python benchmarks/ann.py [--masks 2000] [--layer features.conv3] [--device cpu]
                             [--captum-channels 4] [--repeats 3] [--threads 2] [--busy]

Diagnostic images of all channels of ``--layer`` from 2,000 bubbles masks (256 x 256,
sigma 10 px, 20 bubbles; the face ``id00_happy``):

(a) ``ann_bridge.diagnostic_images`` (masks generated on the device, every channel
    recorded in one truncated forward pass per batch, then the many-target
    classification image) over the bare forward passes of the truncated network
    (resize + normalise + the layers up to ``--layer``, nothing else) on the same
    bubbled stimuli, made beforehand and outside the timer. Target: <= 1.15.
(b) Against captum's ``NeuronFeatureAblation`` looped over the channels with the same
    masks, as a captum user would do it: per channel, the face is the input, the
    bubbled stimuli are the baselines and the whole image is one feature, so each
    attribution is the seed's perturbation ``a(X) - a(X')`` of that channel for every
    mask (two forward passes of the whole network per channel). ``--captum-channels``
    channels are timed with all masks and the time is extrapolated linearly to every
    channel (the loop does the same work per channel); the responses are checked
    against ours. Both sides add the same classification-image step. Target: >= 20x.

Timings are the minimum over ``--repeats`` runs, ours and the bare passes interleaved
(other processes share the CPU and their load drifts during a run). ``--busy`` repeats
(a) with one core kept busy by another process (``busy.busy_core``), as a lab PC running
PsychoPy or a shared server would.
"""

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import classification_image  # noqa: E402
from ann_bridge import BubbledStimuli, diagnostic_images, load_default_model  # noqa: E402
from ann_bridge.record import UnitRecorder  # noqa: E402
from bubbles import BubbleSpec, sample_centers  # noqa: E402
from bubbles.faces import face_set  # noqa: E402
from busy import busy_core  # noqa: E402


def truncated(model, layer):
    """The embedded CNN cut after ``layer`` as a plain module (the bare baseline)."""
    names = [n for n, _ in model.features.named_children()]
    short = layer.split(".", 1)[1]
    if not layer.startswith("features.") or short not in names:
        valid = ["features." + n for n in names]
        raise ValueError(f"--layer must be one of {valid}, got {layer!r}")

    class Norm(nn.Module):
        def forward(self, x):
            return (x - 0.5) / 0.25

    return nn.Sequential(model.resize, Norm(), model.features[:names.index(short) + 1]).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats, device):
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--masks", type=int, default=2000)
    p.add_argument("--layer", default="features.conv3")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--captum-channels", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--busy", action="store_true",
                   help="also time (a) with one core kept busy by another process")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    model = load_default_model(device=dev)
    faces = face_set(1, seed=0, size=256)
    image = faces.images[0]
    spec = BubbleSpec(shape=(256, 256), sigma=10.0, n_bubbles=20)
    seed, n, bs = 7, args.masks, args.batch_size
    centers = sample_centers(spec, seed, n)
    timg = torch.from_numpy(image[None]).to(dev)
    which = np.zeros(n, int)
    print(f"device {dev}, torch {torch.__version__}, {args.threads} CPU threads; layer "
          f"{args.layer}; {n} masks 256x256, sigma 10, 20 bubbles; batch {bs}")

    # -- (a) ours vs the bare truncated forward passes -------------------------------
    def ours():
        return diagnostic_images(spec, model, args.layer, image, n, seed, batch_size=bs,
                                 device=dev, progress=False)

    bare = truncated(model, args.layer).to(dev)
    make = BubbledStimuli(spec, timg, seed=seed)
    stims = [make(which[i:i + bs], centers[i:i + bs]) for i in range(0, n, bs)]

    def bare_pass():
        with torch.inference_mode():
            return [bare(s[:, None]).mean(dim=(2, 3)) for s in stims]

    # interleaved repeats: the load of other processes drifts during a run, so each of
    # ours is paired with the bare run right after it; CPU time (all threads of this
    # process) is reported too, as it barely depends on the other processes
    def paired(condition):
        walls, cpus = [], []
        with condition:
            ours(), bare_pass()                                       # warm-up
            for _ in range(args.repeats):
                c0 = time.process_time()
                t1, ci = timed(ours, 1, dev)
                c1 = time.process_time()
                t2, outs = timed(bare_pass, 1, dev)
                c2 = time.process_time()
                walls.append((t1, t2))
                cpus.append((c1 - c0, c2 - c1))
        return np.array(walls), np.array(cpus), ci, outs

    walls, cpus, ci, outs = paired(contextlib.nullcontext())
    t_ours, t_bare = walls.min(axis=0)
    busy = paired(busy_core())[:2] if args.busy else None
    n_units = ci.z.shape[0]
    bare_resp = torch.cat(outs).double().cpu().numpy()

    rec = UnitRecorder(model, args.layer, device=dev)
    buf = torch.empty((bs, 256, 256), device=dev)

    def masks_only():                       # as the probe does: constants made once
        compose = BubbledStimuli(spec, timg, seed=seed)
        for i in range(0, n, bs):
            compose(which[i:i + bs], centers[i:i + bs], out=buf)

    t_masks, _ = timed(masks_only, args.repeats, dev)
    t_ci, _ = timed(lambda: classification_image(spec, centers, bare_resp, progress=False),
                    args.repeats, dev)
    del stims
    print(f"(a) {n_units} channels of {args.layer}")
    print(f"    ours, diagnostic_images end to end:     {t_ours:8.3f} s")
    print(f"      parts timed alone: bubbled stimuli {t_masks:.3f} s, classification "
          f"image of {n_units} maps {t_ci:.3f} s")
    print(f"    bare truncated forward passes:          {t_bare:8.3f} s")
    print(f"    ratio ours / bare: {t_ours / t_bare:.2f} (min / min), median of paired runs "
          f"{np.median(walls[:, 0] / walls[:, 1]):.2f}, CPU time "
          f"{np.median(cpus[:, 0] / cpus[:, 1]):.2f}   (target <= 1.15)")
    if busy is not None:
        bw, bc = busy
        b_ours, b_bare = bw.min(axis=0)
        print(f"    one core busy: ours {b_ours:.3f} s, bare {b_bare:.3f} s, ratio "
              f"{b_ours / b_bare:.2f} (min / min), median of paired runs "
              f"{np.median(bw[:, 0] / bw[:, 1]):.2f}, CPU time "
              f"{np.median(bc[:, 0] / bc[:, 1]):.2f}")

    # -- (b) ours vs captum NeuronFeatureAblation looped over channels ----------------
    from captum.attr import NeuronFeatureAblation

    k = min(args.captum_channels, n_units)
    layer_mod = dict(model.named_modules())[args.layer]
    nfa = NeuronFeatureAblation(model, layer_mod)
    fmask = torch.zeros(1, 1, 256, 256, dtype=torch.long, device=dev)

    def captum_loop():
        resp = np.empty((n, k))
        for c in range(k):
            sel = (lambda out, c=c: out[:, c].mean(dim=(1, 2)))
            col = []
            for i in range(0, n, bs):
                base = make(which[i:i + bs], centers[i:i + bs])[:, None]
                x = timg[None].expand(len(base), 1, 256, 256)
                with torch.no_grad():
                    a = nfa.attribute(x, neuron_selector=sel, baselines=base,
                                      feature_mask=fmask)
                col.append(a[:, 0, 0, 0].double().cpu())
            resp[:, c] = torch.cat(col).numpy()
        return resp

    t_cap_k, cap = timed(captum_loop, 1, dev)
    t_cap = t_cap_k * n_units / k
    full = rec(timg)[args.layer].double().cpu().numpy()[0, :k]
    ok = np.allclose(cap, full[None] - bare_resp[:, :k], atol=1e-3 * np.abs(full).max())
    print(f"(b) captum NeuronFeatureAblation, {k} channels x {n} masks: {t_cap_k:8.3f} s "
          f"-> {n_units} channels extrapolated: {t_cap:8.1f} s "
          f"(responses equal ours: {ok})")
    print(f"    + the same classification image: {t_cap + t_ci:8.1f} s vs ours "
          f"{t_ours:.3f} s -> speed-up {(t_cap + t_ci) / t_ours:.0f}x   (target >= 20x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
