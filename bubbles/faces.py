"""The embedded default stimulus set: procedural grey faces with expressions.

:func:`face_set` draws aligned grey faces (eyes at the same height in every
image, as in aligned photographic sets such as the one of Gosselin & Schyns,
2001) on a mid-grey background, for any number of identities and the
expressions 'happy', 'fearful' and 'neutral'. Identities differ in face shape,
feature positions and sizes, skin tone and hair; expressions differ where real
ones do (Ekman & Friesen's action units): a happy face has raised mouth
corners, an open smile showing the upper teeth, raised cheeks with
nasolabial folds and narrowed eyes; a fearful face has widely opened eyes
(sclera visible above the iris), raised and drawn-together brows with
forehead wrinkles, and a horizontally stretched open mouth; a neutral face has
a closed straight mouth and relaxed brows and eyes.

Drawn with numpy (anti-aliased ellipses, bands and strokes along curves) and
Gaussian-blurred shading; each image comes with boolean ROI masks of the eyes,
brows, nose and mouth, ground truth to check diagnostic images against.

:func:`load_source` says what a configuration's ``stimuli.source`` names: these
faces, or a folder of the user's own images (:class:`bubbles.stimuli.StimulusSet`).

References
----------
Gosselin, F., & Schyns, P. G. (2001). Bubbles: a technique to reveal the use
of information in recognition tasks. Vision Research, 41, 2261-2271.
:doi:`10.1016/S0042-6989(01)00097-9`

Ekman, P., & Friesen, W. V. (1978). Facial Action Coding System. Consulting
Psychologists Press.
"""

from __future__ import annotations

import functools
import numbers
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from .masks import seed_sequence
from .stimuli import ROI_NAMES, StimulusSet

__all__ = ["face_set", "default_faces", "load_source", "EXPRESSIONS", "MIN_SIZE"]

#: Expressions :func:`face_set` can draw.
EXPRESSIONS = ("happy", "fearful", "neutral")
#: Smallest image size in pixels that :func:`face_set` draws (features need ~2 px).
MIN_SIZE = 64
#: Eye line (row) as a fraction of the image size, the same for every identity.
EYE_LINE = 0.44
_BACKGROUND = 0.5

# Expression parameters. Lengths are fractions of the image size, the others
# multiply the identity's own value. eye_u / eye_l: upper / lower lid opening;
# brow_*: raise of the whole brow, extra raise of its inner end, inward shift,
# arch; mouth_*: width, corner lift, opening above / below the lip line and
# the boxiness of the opening (smaller power = squarer), teeth shown.
_EXPR = {
    "neutral": dict(eye_u=1.0, eye_l=1.0, brow_up=0.0, brow_in_up=0.0, brow_in=0.0,
                    brow_arch=1.0, mouth_w=1.0, lift=0.0, open_u=0.0, open_l=0.0,
                    pow_u=1.0, pow_l=1.0, teeth_u=0.0, teeth_l=0.0, lips=1.0,
                    cheeks=0.0, folds=0.15, wrinkles=0.0),
    "happy": dict(eye_u=0.85, eye_l=0.35, brow_up=-0.004, brow_in_up=0.0, brow_in=0.0,
                  brow_arch=1.0, mouth_w=1.3, lift=0.04, open_u=0.008, open_l=0.058,
                  pow_u=1.0, pow_l=0.8, teeth_u=0.5, teeth_l=0.0, lips=0.6,
                  cheeks=1.0, folds=1.0, wrinkles=0.0),
    "fearful": dict(eye_u=1.85, eye_l=1.3, brow_up=0.028, brow_in_up=0.03, brow_in=0.01,
                    brow_arch=0.15, mouth_w=1.25, lift=-0.01, open_u=0.014, open_l=0.04,
                    pow_u=0.45, pow_l=0.35, teeth_u=0.12, teeth_l=0.28, lips=0.65,
                    cheeks=0.0, folds=0.4, wrinkles=1.0),
}


# -- anti-aliased primitives on local boxes -----------------------------------
def _box(size, y0, y1, x0, x1):
    """Slices and broadcastable pixel-centre coordinates of a clipped box."""
    r0, r1 = max(int(np.floor(y0)) - 1, 0), min(int(np.ceil(y1)) + 2, size)
    c0, c1 = max(int(np.floor(x0)) - 1, 0), min(int(np.ceil(x1)) + 2, size)
    r1, c1 = max(r1, r0 + 1), max(c1, c0 + 1)
    y = np.arange(r0, r1, dtype=np.float32)[:, None]
    x = np.arange(c0, c1, dtype=np.float32)[None, :]
    return (slice(r0, r1), slice(c0, c1)), y, x


def _ellipse(size, cy, cx, ry, rx):
    """(slices, coverage) of an anti-aliased ellipse."""
    sl, y, x = _box(size, cy - ry, cy + ry, cx - rx, cx + rx)
    u, v = (x - cx) / rx, (y - cy) / ry
    q = np.sqrt(u * u + v * v) + 1e-6
    grad = np.sqrt((u / rx) ** 2 + (v / ry) ** 2) / q + 1e-6
    return sl, np.clip(0.5 - (q - 1.0) / grad, 0.0, 1.0)


def _edge(y, curve, x, sign):
    """Coverage of the side y > curve(x) (sign=1) or y < curve(x) (sign=-1)."""
    slope = np.gradient(curve, axis=1) if curve.shape[1] > 1 else 0.0
    return np.clip(0.5 + sign * (y - curve) / np.sqrt(1.0 + slope * slope), 0.0, 1.0)


_T = np.linspace(-1.0, 1.0, 41, dtype=np.float32)[None, :]


def _band(size, cx, half_w, top, bottom):
    """(slices, coverage, t) of the region top(t) < y < bottom(t), |t| < 1.

    ``t = (x - cx) / half_w``; `top` and `bottom` map t to rows.
    """
    lo, hi = np.min(top(_T)), np.max(bottom(_T))
    sl, y, x = _box(size, lo, hi, cx - half_w, cx + half_w)
    t = np.clip((x - cx) / half_w, -1.0, 1.0)
    cov = _edge(y, top(t), x, 1) * _edge(y, bottom(t), x, -1)
    cov *= np.clip(half_w + 0.5 - np.abs(x - cx), 0.0, 1.0)
    return sl, cov, t


def _stroke(size, cx, half_w, center, half_thick):
    """(slices, coverage) of a line along y = center(t); half_thick: float or f(t)."""
    thick = half_thick if callable(half_thick) else (lambda t: np.full_like(t, half_thick))
    c, h = center(_T), np.max(thick(_T))
    sl, y, x = _box(size, np.min(c) - h - 2, np.max(c) + h + 2, cx - half_w, cx + half_w)
    t = np.clip((x - cx) / half_w, -1.0, 1.0)
    c = center(t)
    slope = np.gradient(c, axis=1) if c.shape[1] > 1 else 0.0
    dist = np.abs(y - c) / np.sqrt(1.0 + slope * slope)
    h = thick(t)
    cov = np.clip(h + 0.5 - dist, 0.0, np.minimum(1.0, 2.0 * h))
    cov *= np.clip(half_w + 0.5 - np.abs(x - cx), 0.0, 1.0)
    return sl, cov


def _paint(img, sl_cov, value, alpha=1.0):
    img[sl_cov[0]] += (alpha * sl_cov[1]) * (value - img[sl_cov[0]])


def _add(layer, sl_cov, amount):
    layer[sl_cov[0]] += amount * sl_cov[1]


def _smoothstep(a, b, x):
    z = np.clip((x - a) / (b - a), 0.0, 1.0)
    return z * z * (3.0 - 2.0 * z)


# -- identities ------------------------------------------------------------------
def _identity(root, index, size):
    """Random face parameters of one identity (pixels), from (root, index) only.

    The identity's sequence appends ``index`` to the root's entropy, so an int seed
    ``s`` gives ``SeedSequence([s, index])``.
    """
    entropy = root.entropy
    entropy = list(entropy) if isinstance(entropy, (list, tuple)) else [entropy]
    rng = np.random.default_rng(np.random.SeedSequence(
        entropy + [index], spawn_key=root.spawn_key, pool_size=root.pool_size))
    u = rng.uniform
    s = float(size)
    p = dict(
        cx=(s - 1) / 2.0, eye_y=EYE_LINE * s,
        up=u(0.30, 0.34) * s, down=u(0.44, 0.50) * s, a=u(0.28, 0.34) * s,
        jaw=u(0.06, 0.2), chin_pow=u(2.0, 3.2),
        skin=u(0.50, 0.78),
        eye_dx=u(0.115, 0.14) * s, eye_w=u(0.056, 0.064) * s, iris=u(0.022, 0.026) * s,
        iris_v=u(0.15, 0.45), tilt=u(-0.004, 0.006) * s,
        brow_gap=u(0.068, 0.085) * s, brow_th=u(0.0065, 0.011) * s,
        brow_arch=u(0.006, 0.02) * s,
        nose_y=u(0.17, 0.21) * s, nose_w=u(0.040, 0.055) * s,
        mouth_y=u(0.285, 0.325) * s, mouth_w=u(0.075, 0.092) * s,
        lip_u=u(0.011, 0.016) * s, lip_l=u(0.016, 0.024) * s,
        hair_style=int(rng.integers(0, 4)), hair_vol=u(0.015, 0.06) * s,
        hairline=u(0.19, 0.24) * s, part=u(-0.1, 0.1) * s,
        hair_seed=int(rng.integers(2 ** 31)),
    )
    p["eye_u"] = p["iris"] * u(0.85, 0.95)
    p["eye_l"] = p["iris"] * u(0.75, 0.85)
    p["brow_dark"] = u(0.08, 0.3)
    p["hair_v"] = u(0.04, 0.3) if rng.random() < 0.75 else u(0.68, 0.82)
    return p


def _face_outline(p, size):
    """Coverage (H, W) of the head outline and its normalised radius q."""
    y = np.arange(size, dtype=np.float32)[:, None]
    x = np.arange(size, dtype=np.float32)[None, :]
    v = np.where(y < p["eye_y"], (y - p["eye_y"]) / p["up"], (y - p["eye_y"]) / p["down"])
    vc = np.clip(v, 0.0, None)
    half = p["a"] * (1.0 - p["jaw"] * vc ** 2)
    vp = np.where(v < 0, v * v, np.abs(v) ** p["chin_pow"])
    q = np.sqrt(((x - p["cx"]) / half) ** 2 + vp)
    gy, gx = np.gradient(q)
    cov = np.clip(0.5 - (q - 1.0) / (np.sqrt(gx * gx + gy * gy) + 1e-6), 0.0, 1.0)
    return cov, q


def _base(p, size):
    """Background, ears, neck, shaded skin and hair of one identity.

    Returns the image, the face coverage and the hair coverage.
    """
    s, cx, ey, skin = float(size), p["cx"], p["eye_y"], p["skin"]
    img = np.full((size, size), _BACKGROUND, np.float32)
    face, q = _face_outline(p, size)
    y = np.arange(size, dtype=np.float32)[:, None]
    x = np.arange(size, dtype=np.float32)[None, :]
    # neck and ears, then the face over them
    neck = np.clip(0.42 * p["a"] - np.abs(x - cx) + 0.5, 0, 1) * \
        np.clip(y - (ey + 0.3 * s) + 0.5, 0, 1)
    img += neck * (skin * 0.8 - img)
    for side in (-1, 1):
        ear = _ellipse(size, ey + 0.075 * s, cx + side * p["a"] * 0.97, 0.07 * s, 0.032 * s)
        _paint(img, ear, skin * 0.88)
        _paint(img, _ellipse(size, ey + 0.075 * s, cx + side * p["a"] * 0.985,
                             0.045 * s, 0.014 * s), skin * 0.7, 0.6)
    img += face * (skin - img)
    # identity shading: eye sockets, nose, cheekbones, forehead, chin, soft edges
    shade = np.zeros((size, size), np.float32)
    ny = ey + p["nose_y"]
    for side in (-1, 1):
        ex = cx + side * p["eye_dx"]
        _add(shade, _ellipse(size, ey - 0.018 * s, ex, 0.05 * s, p["eye_w"] * 1.2), -0.12)
        _add(shade, _ellipse(size, ey + p["nose_y"] * 0.5, cx + side * p["nose_w"] * 0.5,
                             p["nose_y"] * 0.42, 0.008 * s), -0.10)
        _add(shade, _ellipse(size, ny - 0.006 * s, cx + side * p["nose_w"] * 0.8,
                             0.018 * s, 0.011 * s), -0.16)
        _add(shade, _ellipse(size, ey + 0.09 * s, cx + side * (p["eye_dx"] + 0.03 * s),
                             0.035 * s, 0.05 * s), 0.05)
    _add(shade, _ellipse(size, ny + 0.02 * s, cx, 0.011 * s, p["nose_w"] * 0.8), -0.2)
    _add(shade, _ellipse(size, ny - 0.01 * s, cx, 0.016 * s, 0.014 * s), 0.1)
    _add(shade, _ellipse(size, ey - 0.2 * s, cx, 0.06 * s, 0.12 * s), 0.05)
    _add(shade, _ellipse(size, ey + p["down"] - 0.04 * s, cx, 0.03 * s, 0.07 * s), 0.05)
    shade = ndimage.gaussian_filter(shade, 0.014 * s)
    shade -= 0.28 * _smoothstep(0.72, 1.02, q)
    img *= 1.0 + face * shade
    img *= 1.0 - 0.3 * (1.0 - face) * neck * np.exp(-np.clip(y - ey - p["down"], 0, None)
                                                    / (0.04 * s))
    # hair: behind the head (cap, bob or long) and over the forehead
    style, vol = p["hair_style"], p["hair_vol"]
    low = ey + {0: -0.03, 1: 0.42, 2: 0.18, 3: -0.04}[style] * s
    wide = (p["a"] + vol) * (1.0 + 0.08 * np.clip((y - ey) / (0.3 * s), 0, 1))
    sl, cap = _ellipse(size, ey - 0.02 * s, cx, p["up"] + vol + 0.02 * s, p["a"] + vol)
    back = np.zeros((size, size), np.float32)
    back[sl] = cap
    if low > ey:
        strip = np.clip(wide - np.abs(x - cx) + 0.5, 0, 1) * np.clip(y - ey + 0.5, 0, 1)
        back = np.maximum(back, strip)
    back *= _smoothstep(low + 0.5, low - 0.03 * s, y)   # feathered ends
    hl_y = ey - p["hairline"]
    dx = (x - cx - p["part"]) / p["a"]
    if style == 2:
        line = hl_y + 0.012 * s * np.cos(dx * 11.0) + 0.05 * s * dx * dx
    elif style == 3:
        line = hl_y - 0.05 * s + 0.14 * s * dx * dx
    else:
        line = hl_y - 0.015 * s + 0.08 * s * dx * dx - 0.012 * s * np.abs(dx)
    line = np.minimum(line, max(low, ey - 0.04 * s))
    front = np.clip(line - y + 0.5, 0.0, 1.0)
    hair = back * (1.0 - face) + front * face
    rng = np.random.default_rng(p["hair_seed"])
    tex = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32),
                                  (0.02 * s, 0.003 * s))
    tex *= 0.05 / (tex.std() + 1e-9)
    sheen = 0.06 * np.exp(-((y - (ey - p["up"] + 0.03 * s)) / (0.05 * s)) ** 2)
    hair_v = p["hair_v"] + (tex + sheen) * (1.0 if p["hair_v"] < 0.5 else -1.0)
    img += hair * (hair_v - img)
    return img, face, hair


# -- features --------------------------------------------------------------------
def _features(img, p, e, size, skin_mask):
    """Draw brows, eyes, nose and mouth of expression `e` on `img`; return ROIs."""
    s, cx, ey, skin = float(size), p["cx"], p["eye_y"], p["skin"]
    px = s / 256.0  # one pixel of the 256 px design
    rois = {}
    # mouth geometry: lip line mid(t), opening top(t)..bot(t), lips around it
    mw = p["mouth_w"] * e["mouth_w"]
    my = ey + p["mouth_y"]
    lift, ou, ol = e["lift"] * s, e["open_u"] * s, e["open_l"] * s
    lu, ll = p["lip_u"] * e["lips"], p["lip_l"] * e["lips"]

    def mid(t):
        return my - lift * t * t

    def top(t):
        return mid(t) - ou * (1 - t * t) ** e["pow_u"]

    def bot(t):
        return mid(t) + ol * (1 - t * t) ** e["pow_l"]

    def lip_top(t):
        bow = 1.0 - 0.3 * np.exp(-(t / 0.12) ** 2) + 0.1 * np.exp(-((np.abs(t) - 0.3) / 0.15) ** 2)
        return top(t) - lu * (1 - t * t) ** 0.6 * bow

    def lip_bot(t):
        return bot(t) + ll * (1 - t * t) ** 0.6

    # expression shading: broad (raised cheeks) and fine (folds, wrinkles)
    broad = np.zeros((size, size), np.float32)
    fine = np.zeros((size, size), np.float32)
    for side in (-1, 1):
        x0, y0 = cx + side * p["nose_w"] * 1.05, ey + p["nose_y"] - 0.012 * s
        x1, y1 = cx + side * (mw + 0.02 * s), my - lift + 0.035 * s
        fw = abs(x1 - x0) / 2
        _add(fine, _stroke(size, (x0 + x1) / 2, fw,
                           lambda t, side=side, y0=y0, y1=y1: (y0 + y1) / 2
                           + side * t * (y1 - y0) / 2 - 0.015 * s * (1 - t * t),
                           lambda t: 0.004 * s * (1 - t * t) + 0.5 * px), -0.3 * e["folds"])
        ex = cx + side * p["eye_dx"]
        _add(broad, _ellipse(size, ey + 0.075 * s, ex + side * 0.01 * s, 0.035 * s, 0.05 * s),
             0.12 * e["cheeks"])
        _add(broad, _ellipse(size, ey + 0.13 * s, ex + side * 0.01 * s, 0.02 * s, 0.045 * s),
             -0.08 * e["cheeks"])
        _add(fine, _stroke(size, ex, p["eye_w"] * 0.75,
                           lambda t: ey + p["eye_l"] * e["eye_l"] + 0.012 * s + 0.005 * s * t * t,
                           lambda t: 0.5 * px + 0.0025 * s * (1 - t * t)), -0.25 * e["cheeks"])
        for k in (-1, 0, 1):  # crow's feet
            _add(fine, _stroke(size, ex + side * (p["eye_w"] + 0.025 * s), 0.018 * s,
                               lambda t, k=k, side=side: ey + k * 0.01 * s
                               + side * k * 0.008 * s * t, 0.5 * px),
                 -0.2 * e["cheeks"])
    brow_top = ey - p["brow_gap"] - (e["brow_up"] + e["brow_in_up"]) * s - p["brow_th"]
    for k in range(3):  # forehead wrinkles, arched like the raised brows
        yk = brow_top - 0.022 * s - k * 0.02 * s
        _add(fine, _stroke(size, cx, 0.075 * s - k * 0.008 * s,
                           lambda t, yk=yk: yk + 0.012 * s * t * t,
                           lambda t: (0.3 + 0.4 * (1 - t * t)) * px), -0.25 * e["wrinkles"])
    _add(fine, _ellipse(size, bot(0) + ll + 0.016 * s, cx, 0.008 * s, mw * 0.5), -0.25)
    shade = ndimage.gaussian_filter(broad, 0.02 * s) + ndimage.gaussian_filter(fine, 0.004 * s)
    img *= 1.0 + skin_mask * shade
    # brows: a soft halo and a tapering stroke; fear raises the inner ends
    rois["brows"] = np.zeros((size, size), bool)
    for side in (-1, 1):
        x_in = p["eye_dx"] - p["eye_w"] * 1.05 - e["brow_in"] * s
        x_out = p["eye_dx"] + p["eye_w"] * 1.2
        y_mid = ey - p["brow_gap"] - e["brow_up"] * s
        y_in, y_out = y_mid - e["brow_in_up"] * s, y_mid + 0.004 * s
        arch = p["brow_arch"] * e["brow_arch"]
        bx, bw = cx + side * (x_in + x_out) / 2, (x_out - x_in) / 2

        def centre(t, side=side, y_in=y_in, y_out=y_out, arch=arch):
            r = (side * t + 1) / 2  # 0 at the inner end, 1 at the outer end
            return y_in + (y_out - y_in) * r - 4 * arch * r * (1 - r)

        def thick(t, side=side):
            r = (side * t + 1) / 2
            return p["brow_th"] * (1.1 - 0.7 * r ** 2) * np.clip(10 * (1 - r) + 0.3, 0, 1)

        _paint(img, _stroke(size, bx, bw + px, centre, lambda t: thick(t) + 1.2 * px),
               p["brow_dark"], 0.3)
        _paint(img, _stroke(size, bx, bw, centre, thick), p["brow_dark"], 0.85)
        sl, cov = _stroke(size, bx, bw + 0.02 * s, centre, 0.02 * s)
        rois["brows"][sl] |= cov > 0
    # eyes: lid crease, eyeball with iris, pupil and glint, lash line, lower lid
    rois["eyes"] = np.zeros((size, size), bool)
    for side in (-1, 1):
        ex, ew, r = cx + side * p["eye_dx"], p["eye_w"], p["iris"]
        hu, hl = p["eye_u"] * e["eye_u"], p["eye_l"] * e["eye_l"]
        tilt = p["tilt"]

        def lid_top(t, side=side, hu=hu):
            return ey - hu * (1 - t * t) ** 0.75 - side * tilt * t

        def lid_bot(t, side=side, hl=hl):
            return ey + hl * (1 - t * t) ** 0.9 - side * tilt * t

        crease = max(p["eye_u"] + 0.012 * s, hu + 0.004 * s)

        def crease_line(t, crease=crease):
            return ey - crease * (1 - t * t) ** 0.6

        _paint(img, _band(size, ex, ew * 1.05, lambda t: crease_line(t) - 2 * px, lid_top)[:2],
               skin * 0.8, 0.35)
        sl, cov, t = _band(size, ex, ew, lid_top, lid_bot)
        yy = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None]
        xx = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :]
        ball = 0.86 - 0.18 * t * t
        d_iris = np.sqrt((yy - ey) ** 2 + (xx - ex) ** 2)
        iris = np.clip(r + 0.5 - d_iris, 0, 1)
        ball = ball + iris * (p["iris_v"] * (0.8 + 0.4 * d_iris / r) - ball)
        ball += np.clip(0.45 * r + 0.5 - d_iris, 0, 1) * (0.04 - ball)
        glint = np.sqrt((yy - ey + 0.35 * r) ** 2 + (xx - ex - 0.3 * r) ** 2)
        ball += np.clip(0.2 * r + 0.5 - glint, 0, 1) * (0.95 - ball)
        ball *= 1.0 - 0.35 * np.exp(-np.clip(yy - lid_top(t), 0, None) / (0.2 * r))
        img[sl] += cov * (ball - img[sl])
        _paint(img, _stroke(size, ex, ew * 1.04, lid_top,
                            lambda t, side=side: 0.0035 * s * (1 + 0.5 * np.clip(side * t, 0, 1))
                            + 0.4 * px), 0.07, 0.95)
        _paint(img, _stroke(size, ex, ew * 0.95, lid_bot, 0.0015 * s),
               skin * 0.6, 0.6)
        _paint(img, _stroke(size, ex, ew * 0.9, crease_line, 0.6 * px),
               skin * 0.65, 0.5)
        sl, cov = _ellipse(size, ey - (hu - hl) / 2, ex, (hu + hl) / 2 + 0.02 * s,
                           ew * 1.1 + 0.01 * s)
        rois["eyes"][sl] |= cov > 0
    # nose: soft nostrils (the bridge and wings are shading)
    ny = ey + p["nose_y"]
    for side in (-1, 1):
        _paint(img, _ellipse(size, ny + 0.006 * s, cx + side * p["nose_w"] * 0.4,
                             0.0065 * s, 0.013 * s), skin * 0.35, 0.75)
    rois["nose"] = np.zeros((size, size), bool)
    sl, cov = _ellipse(size, ey + 0.55 * p["nose_y"] + 0.012 * s, cx,
                       0.45 * p["nose_y"] + 0.02 * s, p["nose_w"] + 0.012 * s)
    rois["nose"][sl] |= cov > 0
    # mouth: lips, then the opening with teeth (or the closed lip line)
    lip_v = skin * 0.75
    _paint(img, _band(size, cx, mw, lip_top, lip_bot)[:2], lip_v)
    _paint(img, _ellipse(size, bot(0) + ll * 0.45, cx, ll * 0.3, mw * 0.35), skin * 0.95, 0.35)
    if ou + ol > 0:
        sl, cov, t = _band(size, cx, mw, top, bot)
        yy = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None]
        xx = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :]
        inside = np.full(cov.shape, 0.08, np.float32)
        h = (ou + ol) * (1 - t * t) ** 0.3
        teeth_u = np.clip(top(t) + e["teeth_u"] * h - yy + 0.5, 0, 1)
        teeth_l = np.clip(yy - (bot(t) - e["teeth_l"] * h) + 0.5, 0, 1)
        tooth_w = 0.024 * s
        gaps = 1.0 - 0.3 * np.exp(-((np.mod(xx - cx, tooth_w) - tooth_w / 2) / (0.7 * px)) ** 2)
        tooth = (0.9 - 0.45 * t * t) * gaps
        tooth = tooth * (1.0 - 0.3 * np.exp(-np.clip(yy - top(t), 0, None) / (1.5 * px)))
        inside += np.maximum(teeth_u, teeth_l) * (tooth - inside)
        img[sl] += cov * (inside - img[sl])
    else:
        _paint(img, _stroke(size, cx, mw * 1.02, mid,
                            lambda t: 0.0025 * s * (0.6 + 0.6 * t * t)), 0.12, 0.85)
    rois["mouth"] = np.zeros((size, size), bool)
    sl, cov, _ = _band(size, cx, mw + 0.012 * s, lambda t: lip_top(t) - 0.012 * s,
                       lambda t: lip_bot(t) + 0.012 * s)
    rois["mouth"][sl] |= cov > 0
    return rois


def face_set(n_identities=20, *, seed=0, size=256, expressions=EXPRESSIONS):
    """Procedural grey faces: `n_identities` identities x `expressions`.

    Parameters
    ----------
    n_identities : int
        Number of identities (>= 1). Identity i depends only on (seed, i), so
        a larger set extends a smaller one.
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        Seed of every random choice (:func:`bubbles.masks.seed_sequence`):
        identity i is drawn from ``numpy.random.SeedSequence([seed, i])`` (for a
        SeedSequence, ``i`` is appended to its entropy). A Generator is drawn
        from once, for that integer seed.
    size : int
        Image height and width in pixels (>= ``MIN_SIZE``, 64).
    expressions : sequence of str
        A subset of ``('happy', 'fearful', 'neutral')``, in the order wanted.

    Returns
    -------
    StimulusSet
        float32 images (n_identities * len(expressions), size, size) in
        [0, 1] on a 0.5 grey background, identity-major; table columns
        stimulus_id ('id03_happy'), identity ('id03'), expression; ROI masks
        'eyes', 'brows', 'nose', 'mouth'.

    Examples
    --------
    >>> s = face_set(2, expressions=("happy", "neutral"))
    >>> s.images.shape, s.table.stimulus_id[0], s.expressions
    ((4, 256, 256), 'id00_happy', ('happy', 'neutral'))
    """
    for name, value, least, what in [
            ("n_identities", n_identities, 1, "an integer >= 1"),
            ("size", size, MIN_SIZE, f"an integer >= {MIN_SIZE} pixels (the smallest "
                                     "image the procedural faces are drawn at)")]:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be {what}, got {value!r}")
    if isinstance(expressions, str):
        expressions = (expressions,)
    expressions = tuple(expressions)
    bad = [x for x in expressions if x not in EXPRESSIONS]
    if not expressions or bad or len(set(expressions)) != len(expressions):
        raise ValueError(f"expressions must be distinct values among {list(EXPRESSIONS)}, "
                         f"got {list(expressions)}")
    root = seed_sequence(seed)              # after every check: a Generator is drawn once
    n = int(n_identities) * len(expressions)
    images = np.empty((n, size, size), np.float32)
    rois = {k: np.empty((n, size, size), bool) for k in ROI_NAMES}
    rows, k = [], 0
    for i in range(int(n_identities)):
        p = _identity(root, i, int(size))
        base, face, hair = _base(p, int(size))
        skin_mask = face * (1.0 - hair)
        ident = f"id{i:02d}"
        for name in expressions:
            img = base.copy()
            r = _features(img, p, _EXPR[name], int(size), skin_mask)
            images[k] = np.clip(img, 0.0, 1.0)
            for key in ROI_NAMES:
                rois[key][k] = r[key]
            rows.append((f"{ident}_{name}", ident, name))
            k += 1
    table = pd.DataFrame(rows, columns=["stimulus_id", "identity", "expression"])
    return StimulusSet(images, table, rois)


def load_source(source, *, n_identities=20, size=256, expressions=None, base_dir=None):
    """The stimulus set a session configuration names.

    This is the one place that says what a ``stimuli.source`` means, for the session
    that shows the images and for the analysis that rebuilds them later.

    Parameters
    ----------
    source : str or path
        ``"faces"`` for the embedded procedural faces
        (``face_set(n_identities, seed=0, size=size)``), otherwise a folder with
        ``manifest.csv`` (:meth:`StimulusSet.from_folder`); a relative folder is taken
        relative to ``base_dir`` when given.
    n_identities, size : int
        Embedded faces only (``size`` >= ``MIN_SIZE``, 64 pixels).
    expressions : sequence of str, optional
        Embedded faces only: the expressions to draw (default: all).
    base_dir : path, optional

    Returns
    -------
    StimulusSet
    """
    if str(source) == "faces":
        return face_set(n_identities, seed=0, size=size,
                        expressions=tuple(expressions or EXPRESSIONS))
    folder = Path(source)
    if base_dir is not None and not folder.is_absolute():
        folder = Path(base_dir) / folder
    return StimulusSet.from_folder(folder)


@functools.lru_cache(maxsize=1)
def default_faces():
    """The default face set, ``face_set()``, built once and cached.

    Its arrays are read-only (they are shared between callers): copy before
    changing them.

    Examples
    --------
    >>> s = default_faces()
    >>> len(s), s.shape
    (60, (256, 256))
    """
    s = face_set()
    s.images.flags.writeable = False
    for v in s.rois.values():
        v.flags.writeable = False
    return s
