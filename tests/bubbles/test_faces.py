"""Tests of the embedded procedural face set (bubbles.faces)."""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy import ndimage

from bubbles.faces import EXPRESSIONS, default_faces, face_set
from bubbles.stimuli import ROI_NAMES, StimulusSet


@pytest.fixture(scope="module")
def faces():
    return default_faces()


def _centroid(mask):
    return np.array(ndimage.center_of_mass(mask))


def test_default_set_layout(faces):
    assert isinstance(faces, StimulusSet)
    assert len(faces) == 60
    assert faces.images.shape == (60, 256, 256)
    assert faces.images.dtype == np.float32
    assert faces.images.min() >= 0.0 and faces.images.max() <= 1.0
    assert faces.expressions == EXPRESSIONS == ("happy", "fearful", "neutral")
    assert len(faces.identities) == 20
    assert faces.table.stimulus_id[4] == "id01_fearful"
    assert faces.table.identity[4] == "id01"
    assert faces.image("id03_happy").shape == (256, 256)
    assert_array_equal(faces.image("id03_happy"), faces.images[9])
    assert set(faces.rois) == set(ROI_NAMES)
    for roi in faces.rois.values():
        assert roi.dtype == bool and roi.shape == faces.images.shape


def test_default_faces_is_cached_and_read_only(faces):
    assert default_faces() is faces
    with pytest.raises(ValueError, match="read-only"):
        faces.images[0, 0, 0] = 1.0


def test_mid_grey_background_and_face_fills_frame(faces):
    img = faces.images[2]
    assert_array_equal(img[-8:, :8], 0.5)          # bottom corners: background
    assert_array_equal(img[-8:, -8:], 0.5)
    not_bg = np.abs(faces.images - 0.5) > 1e-3
    rows = np.flatnonzero(not_bg[2].any(axis=1))
    cols = np.flatnonzero(not_bg[2].any(axis=0))
    assert rows[-1] - rows[0] > 0.75 * 256            # head and hair span most of the frame
    assert cols[-1] - cols[0] > 0.5 * 256


def test_deterministic_same_seed():
    a = face_set(3, seed=5, size=96)
    b = face_set(3, seed=5, size=96)
    assert_array_equal(a.images, b.images)
    for k in ROI_NAMES:
        assert_array_equal(a.rois[k], b.rois[k])
    assert a.table.equals(b.table)


def test_deterministic_across_processes():
    code = ("import hashlib; from bubbles.faces import face_set; "
            "print(hashlib.sha256(face_set(2, seed=4, size=64).images.tobytes()).hexdigest())")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == hashlib.sha256(face_set(2, seed=4, size=64).images.tobytes()).hexdigest()


def test_different_seed_differs():
    a = face_set(2, seed=0, size=96)
    b = face_set(2, seed=1, size=96)
    assert np.abs(a.images - b.images).mean() > 0.01


def test_identity_depends_only_on_seed_and_index(faces):
    small = face_set(2, seed=0)
    assert_array_equal(small.images, faces.images[:6])


def test_generator_seed():
    a = face_set(1, seed=np.random.default_rng(3), size=64)
    b = face_set(1, seed=np.random.default_rng(3), size=64)
    assert_array_equal(a.images, b.images)


def test_does_not_touch_global_random_state():
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    face_set(1, size=64)
    assert np.random.random() == before


def test_expression_subset_and_order():
    s = face_set(2, expressions=("neutral", "happy"), size=64)
    assert s.expressions == ("neutral", "happy")
    assert list(s.table.stimulus_id) == ["id00_neutral", "id00_happy",
                                         "id01_neutral", "id01_happy"]
    full = face_set(2, size=64)
    assert_array_equal(s.image("id01_happy"), full.image("id01_happy"))


def test_other_sizes():
    s = face_set(1, size=128)
    assert s.shape == (128, 128)
    for k in ROI_NAMES:
        assert s.rois[k].any(axis=(1, 2)).all()


def test_rois_non_empty_and_inside_the_face(faces):
    not_background = np.abs(faces.images - 0.5) > 1e-3
    face_region = np.stack([ndimage.binary_fill_holes(m) for m in not_background])
    for k in ROI_NAMES:
        roi = faces.rois[k]
        assert roi.sum(axis=(1, 2)).min() > 200, k
        inside = (roi & face_region).sum(axis=(1, 2)) / roi.sum(axis=(1, 2))
        assert inside.min() == 1.0, k


def test_rois_vertical_order(faces):
    for i in range(len(faces)):
        rows = {k: _centroid(faces.rois[k][i])[0] for k in ROI_NAMES}
        assert rows["brows"] < rows["eyes"] < rows["nose"] < rows["mouth"], (i, rows)


def test_eye_rois_symmetric(faces):
    roi = faces.rois["eyes"]
    mirrored = roi[:, :, ::-1]
    iou = (roi & mirrored).sum(axis=(1, 2)) / (roi | mirrored).sum(axis=(1, 2))
    assert iou.min() > 0.9
    # two blobs, one each side of the midline
    for i in (0, 31, 59):
        labels, n = ndimage.label(roi[i])
        assert n == 2
        cols = sorted(_centroid(labels == j)[1] for j in (1, 2))
        assert cols[0] < 128 < cols[1]


def test_rois_eyes_and_mouth_disjoint(faces):
    assert not (faces.rois["eyes"] & faces.rois["mouth"]).any()
    assert not (faces.rois["eyes"] & faces.rois["brows"]).any()


def test_faces_are_aligned_on_the_eye_line(faces):
    neutral = faces.table.expression.to_numpy() == "neutral"
    rows = [_centroid(r)[0] for r in faces.rois["eyes"][neutral]]
    assert np.ptp(rows) < 2.0                         # pixels


def _energy_inside_rois(faces, expression, dilate=6):
    fractions = []
    for ident in faces.identities:
        a, b = faces.index(f"{ident}_{expression}"), faces.index(f"{ident}_neutral")
        energy = (faces.images[a].astype(np.float64) - faces.images[b]) ** 2
        roi = np.zeros(faces.shape, bool)
        for k in ROI_NAMES:
            roi |= faces.rois[k][a] | faces.rois[k][b]
        roi = ndimage.binary_dilation(roi, iterations=dilate)
        fractions.append(energy[roi].sum() / energy.sum())
    return np.array(fractions)


@pytest.mark.parametrize("expression", ["happy", "fearful"])
def test_expressions_differ_inside_the_feature_rois(faces, expression):
    assert _energy_inside_rois(faces, expression).min() > 0.7


def test_expression_cues(faces):
    """Happy: mouth open and bright teeth; fearful: eyes opened wider, brows higher."""
    for ident in faces.identities[:5]:
        h, f, n = (faces.index(f"{ident}_{e}") for e in ("happy", "fearful", "neutral"))
        eyes = faces.rois["eyes"]
        assert eyes[f].sum() > eyes[n].sum() > eyes[h].sum()
        assert _centroid(faces.rois["brows"][f])[0] < _centroid(faces.rois["brows"][n])[0] - 3
        mouth = faces.rois["mouth"]
        assert mouth[h].sum() > 1.5 * mouth[n].sum()
        # happy shows teeth: more very bright pixels in the mouth than neutral
        assert (faces.images[h][mouth[h]] > 0.75).sum() > 30
        assert (faces.images[h][mouth[h]] < 0.15).sum() > 30     # dark open mouth
        # happy mouth corners are higher than its centre (upturned), neutral not
        assert _corner_lift(mouth[h]) > 4 > 1 > _corner_lift(mouth[n])


def _corner_lift(mouth):
    """Rows by which the mouth ROI's ends sit above its middle."""
    rows, cols = np.nonzero(mouth)
    left, right = cols.min(), cols.max()
    ends = (cols < left + 0.15 * (right - left)) | (cols > right - 0.15 * (right - left))
    middle = np.abs(cols - (left + right) / 2) < 0.1 * (right - left)
    return rows[middle].mean() - rows[ends].mean()


def test_identities_differ(faces):
    neutral = faces.images[faces.table.expression.to_numpy() == "neutral"]
    flat = neutral.reshape(len(neutral), -1).astype(np.float64)
    d = np.sqrt(((flat[:, None] - flat[None]) ** 2).mean(axis=2))
    off = d[~np.eye(len(neutral), dtype=bool)]
    assert off.min() > 0.02


def test_build_time():
    t = time.perf_counter()
    face_set()
    assert time.perf_counter() - t < 3.0              # target well under 2 s


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_identities=0), "n_identities must be an integer >= 1, got 0"),
    (dict(n_identities=2.5), "n_identities must be an integer >= 1, got 2.5"),
    (dict(seed=-1), "seed must be an integer >= 0, a numpy SeedSequence or a numpy "
                    "Generator, got -1"),
    (dict(seed="0"), "seed must be an integer >= 0, a numpy SeedSequence or a numpy "
                     "Generator, got '0'"),
    (dict(size=32), r"size must be an integer >= 64 pixels \(the smallest image the "
                    r"procedural faces are drawn at\), got 32"),
    (dict(expressions=("happy", "angry")), r"expressions must be distinct values among"),
    (dict(expressions=()), r"expressions must be distinct values among"),
    (dict(expressions=("happy", "happy")), r"got \['happy', 'happy'\]"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        face_set(**kwargs)


def test_seed_kinds():
    by_int = face_set(1, seed=5, size=64, expressions=("neutral",))
    by_sequence = face_set(1, seed=np.random.SeedSequence(5), size=64, expressions=("neutral",))
    assert_array_equal(by_sequence.images, by_int.images)
    other = face_set(1, seed=np.random.SeedSequence(5, spawn_key=(1,)), size=64,
                     expressions=("neutral",))
    assert not np.array_equal(other.images, by_int.images)


def test_load_source_faces_and_size_minimum():
    from bubbles import load_source
    from bubbles.faces import MIN_SIZE

    s = load_source("faces", n_identities=1, size=64, expressions=["happy"])
    assert_array_equal(s.images, face_set(1, seed=0, size=64, expressions=("happy",)).images)
    with pytest.raises(ValueError, match=rf"size must be an integer >= {MIN_SIZE} pixels"):
        load_source("faces", n_identities=1, size=16)

