"""Tests of StimulusSet, folder reading/writing and contact sheets (bubbles.stimuli)."""

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image

from bubbles.stimuli import StimulusSet, load_grey, save_contact_sheet


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def small_set(rng):
    images = rng.random((4, 12, 10)).astype(np.float32)
    table = pd.DataFrame({"stimulus_id": ["a1", "a2", "b1", "b2"],
                          "identity": ["a", "a", "b", "b"],
                          "expression": ["happy", "neutral", "neutral", "happy"],
                          "difficulty": [0.1, 0.2, 0.3, 0.4]})
    rois = {"eyes": images > 0.5, "mouth": images < 0.2}
    return StimulusSet(images, table, rois)


def _write_folder(path, images, names, identities=None, expressions=None, **extra):
    path.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, images):
        Image.fromarray(img).save(path / name)
    n = len(names)
    table = pd.DataFrame({"file": names,
                          "identity": identities or [f"p{i}" for i in range(n)],
                          "expression": expressions or ["neutral"] * n, **extra})
    table.to_csv(path / "manifest.csv", index=False)
    return table


# -- the container ---------------------------------------------------------------
def test_basic_properties(small_set):
    s = small_set
    assert len(s) == 4 and s.shape == (12, 10)
    assert s.images.dtype == np.float32
    assert s.expressions == ("happy", "neutral")
    assert s.identities == ("a", "b")
    assert s.index("b1") == 2
    assert_array_equal(s.image("b1"), s.images[2])
    assert_allclose(s.mean_image(), s.images.mean(axis=0), rtol=1e-6)
    assert s.mean_image().shape == (12, 10)
    assert "difficulty" in s.table.columns
    assert "n=4" in repr(s)


def test_subset_by_mask_and_indices(small_set):
    happy = small_set.subset(small_set.table.expression == "happy")
    assert list(happy.table.stimulus_id) == ["a1", "b2"]
    assert list(happy.table.index) == [0, 1]
    assert_array_equal(happy.images, small_set.images[[0, 3]])
    assert_array_equal(happy.rois["eyes"], small_set.rois["eyes"][[0, 3]])
    assert happy.index("b2") == 1
    picked = small_set.subset([2, 1])
    assert list(picked.table.stimulus_id) == ["b1", "a2"]


@pytest.mark.parametrize("sel, match", [
    (np.zeros(4, bool), "selects no stimulus"),
    (np.ones(3, bool), r"boolean mask must have shape \(4,\), got \(3,\)"),
    ([0, 7], r"must lie in \[0, 4\), got values in \[0, 7\]"),
    ([0.5], "integer indices"),
])
def test_subset_errors(small_set, sel, match):
    with pytest.raises(ValueError, match=match):
        small_set.subset(sel)


def test_index_unknown_id(small_set):
    with pytest.raises(KeyError, match="'zz' not in this set"):
        small_set.index("zz")


def _table(n):
    return pd.DataFrame({"stimulus_id": [f"s{i}" for i in range(n)],
                         "identity": ["x"] * n, "expression": ["neutral"] * n})


@pytest.mark.parametrize("images, table, rois, match", [
    (np.zeros((4, 4)), _table(1), None, r"shape \(n, H, W\), got shape \(4, 4\)"),
    (np.zeros((0, 4, 4)), _table(0), None, r"non-empty .* got shape \(0, 4, 4\)"),
    (np.full((1, 4, 4), 1.5), _table(1), None,
     r"must lie in \[0, 1\], got values in \[1.5, 1.5\]"),
    (np.full((1, 4, 4), np.nan), _table(1), None, "must be finite"),
    (np.zeros((2, 4, 4)), _table(1), None, "one row per image: 2 images, got 1 rows"),
    (np.zeros((1, 4, 4)), _table(1).drop(columns="identity"), None,
     r"missing column\(s\) \['identity'\]"),
    (np.zeros((1, 4, 4)), {"stimulus_id": ["a"]}, None, "must be a pandas DataFrame, got dict"),
    (np.zeros((2, 4, 4)), _table(2).assign(stimulus_id=["a", "a"]), None,
     r"'stimulus_id' must be unique, got duplicates \['a'\]"),
    (np.zeros((1, 4, 4)), _table(1).assign(expression=[None]), None,
     "'expression' has empty values at rows"),
    (np.zeros((1, 4, 4)), _table(1), {"eyes": np.zeros((1, 3, 3), bool)},
     r"rois\['eyes'\] must have the images' shape \(1, 4, 4\), got \(1, 3, 3\)"),
    (np.zeros((1, 4, 4)), _table(1), [1], "rois must be a dict"),
])
def test_construction_errors(images, table, rois, match):
    with pytest.raises(ValueError, match=match):
        StimulusSet(images, table, rois)


def test_labels_stored_as_str():
    t = pd.DataFrame({"stimulus_id": [1, 2], "identity": [7, 7], "expression": ["a", "b"]})
    s = StimulusSet(np.zeros((2, 3, 3)), t)
    assert s.identities == ("7",)
    assert s.index(2) == 1


# -- folders -----------------------------------------------------------------------
def test_from_folder_bit_depths_and_colour(tmp_path, rng):
    grey8 = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((6, 5, 1), 255, np.uint8)], axis=2)
    table = _write_folder(tmp_path / "set", [grey8, grey16, rgb, rgba],
                          ["g8.png", "g16.png", "rgb.png", "rgba.png"],
                          expressions=["happy", "neutral", "happy", "fearful"],
                          session=[1, 2, 3, 4])
    s = StimulusSet.from_folder(tmp_path / "set")
    assert len(s) == 4 and s.shape == (6, 5) and s.images.dtype == np.float32
    assert list(s.table.stimulus_id) == ["g8", "g16", "rgb", "rgba"]
    assert list(s.table.file) == list(table.file)
    assert list(s.table.session) == [1, 2, 3, 4]          # extra column kept
    assert s.expressions == ("happy", "neutral", "fearful")
    assert_allclose(s.images[0], grey8 / 255.0, atol=1e-6)
    assert_allclose(s.images[1], grey16 / 65535.0, atol=1e-6)
    lum = (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114) / 255.0
    assert_allclose(s.images[2], lum, atol=1e-5)
    assert_allclose(s.images[3], lum, atol=1e-5)
    assert s.rois is None


def test_from_folder_stimulus_id_column_and_subfolders(tmp_path):
    img = np.zeros((4, 4), np.uint8)
    (tmp_path / "set" / "sub").mkdir(parents=True)
    _write_folder(tmp_path / "set", [img, img], ["sub/x.png", "y.png"],
                  identities=["01", "02"], stimulus_id=["first", "second"])
    s = StimulusSet.from_folder(tmp_path / "set")
    assert list(s.table.stimulus_id) == ["first", "second"]
    assert s.identities == ("01", "02")                    # labels stay strings


def test_load_grey_palette_and_binary(tmp_path):
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("P").save(tmp_path / "p.png")
    Image.fromarray(np.array([[False, True]])).save(tmp_path / "b.png")
    assert_allclose(load_grey(tmp_path / "p.png"), [[0.0, 1.0]], atol=1e-6)
    assert_allclose(load_grey(tmp_path / "b.png"), [[0.0, 1.0]])


def test_round_trip_to_folder(tmp_path, small_set):
    out = small_set.to_folder(tmp_path / "out")
    assert (out / "manifest.csv").is_file() and (out / "a1.png").is_file()
    with Image.open(out / "a1.png") as im:
        assert np.asarray(im).dtype == np.uint16
    back = StimulusSet.from_folder(out)
    assert_allclose(back.images, small_set.images, atol=1 / 65535)
    assert list(back.table.stimulus_id) == list(small_set.table.stimulus_id)
    assert list(back.table.expression) == list(small_set.table.expression)
    assert_allclose(back.table.difficulty, small_set.table.difficulty)
    assert set(back.rois) == {"eyes", "mouth"}
    assert_array_equal(back.rois["eyes"], small_set.rois["eyes"])
    again = StimulusSet.from_folder(back.to_folder(tmp_path / "again"))   # has a file column
    assert_array_equal(again.images, back.images)
    assert list(again.table.columns) == list(back.table.columns)


def test_round_trip_face_set(tmp_path):
    from bubbles.faces import face_set
    s = face_set(1, size=64)
    back = StimulusSet.from_folder(s.to_folder(tmp_path / "faces"))
    assert_allclose(back.images, s.images, atol=1 / 65535)
    assert back.expressions == s.expressions


def test_to_folder_unsafe_ids_are_numbered(tmp_path):
    t = _table(2).assign(stimulus_id=["a/b", "c d"])
    s = StimulusSet(np.zeros((2, 3, 3)), t)
    out = s.to_folder(tmp_path / "o")
    assert (out / "stim0000.png").is_file()
    assert list(StimulusSet.from_folder(out).table.stimulus_id) == ["a/b", "c d"]


def test_to_folder_never_overwrites(tmp_path, small_set):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("data")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        small_set.to_folder(tmp_path / "full")
    (tmp_path / "empty").mkdir()
    small_set.to_folder(tmp_path / "empty")                # an empty folder is fine


def test_from_folder_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StimulusSet.from_folder(tmp_path / "nowhere")


def test_from_folder_missing_manifest(tmp_path):
    (tmp_path / "set").mkdir()
    with pytest.raises(FileNotFoundError, match="has no manifest.csv"):
        StimulusSet.from_folder(tmp_path / "set")


def test_from_folder_missing_image(tmp_path):
    _write_folder(tmp_path / "set", [np.zeros((4, 4), np.uint8)], ["a.png"])
    (tmp_path / "set" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image file .*a\.png' does not exist"):
        StimulusSet.from_folder(tmp_path / "set")


def test_from_folder_unreadable_image(tmp_path):
    _write_folder(tmp_path / "set", [np.zeros((4, 4), np.uint8)], ["a.png"])
    (tmp_path / "set" / "a.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read image file .*a\.png"):
        StimulusSet.from_folder(tmp_path / "set")


def test_from_folder_unequal_sizes(tmp_path):
    _write_folder(tmp_path / "set", [np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)],
                  ["a.png", "b.png"])
    with pytest.raises(ValueError, match=r"same size: 'b.png' is \(5, 4\) .* 'a.png' is \(4, 4\)"):
        StimulusSet.from_folder(tmp_path / "set")


@pytest.mark.parametrize("column", ["file", "identity", "expression"])
def test_from_folder_missing_column(tmp_path, column):
    _write_folder(tmp_path / "set", [np.zeros((4, 4), np.uint8)], ["a.png"])
    m = pd.read_csv(tmp_path / "set" / "manifest.csv").drop(columns=column)
    m.to_csv(tmp_path / "set" / "manifest.csv", index=False)
    with pytest.raises(ValueError, match=rf"missing column\(s\) \['{column}'\]"):
        StimulusSet.from_folder(tmp_path / "set")


def test_from_folder_empty_cell(tmp_path):
    _write_folder(tmp_path / "set", [np.zeros((4, 4), np.uint8)], ["a.png"])
    (tmp_path / "set" / "manifest.csv").write_text("file,identity,expression\na.png,,happy\n")
    with pytest.raises(ValueError,
                       match=r"column 'identity' has empty cells \(file lines \[2\]\)"):
        StimulusSet.from_folder(tmp_path / "set")


@pytest.mark.parametrize("text", ["", "file,identity,expression\n"])
def test_from_folder_empty_set(tmp_path, text):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "manifest.csv").write_text(text)
    with pytest.raises(ValueError, match="empty"):
        StimulusSet.from_folder(tmp_path / "set")


def test_from_folder_duplicate_rows(tmp_path):
    _write_folder(tmp_path / "set", [np.zeros((4, 4), np.uint8)] * 2, ["a.png", "a.png"])
    with pytest.raises(ValueError, match=r"lists file\(s\) more than once: \['a.png'\]"):
        StimulusSet.from_folder(tmp_path / "set")


def test_from_folder_duplicate_stems(tmp_path):
    (tmp_path / "set" / "d").mkdir(parents=True)
    _write_folder(tmp_path / "set", [np.zeros((4, 4), np.uint8)] * 2, ["a.png", "d/a.png"])
    with pytest.raises(ValueError, match=r"'stimulus_id' must be unique, got duplicates \['a'\]"):
        StimulusSet.from_folder(tmp_path / "set")


# -- contact sheets ------------------------------------------------------------------
def test_save_contact_sheet(tmp_path, small_set):
    path = save_contact_sheet(small_set.images, tmp_path / "sheets" / "s.png", ncols=3,
                              labels=list(small_set.table.stimulus_id), pad=2)
    with Image.open(path) as im:
        assert im.mode == "L"
        w, h = im.size
    assert w == 3 * (10 + 2) + 2
    assert h == 2 * (12 + 2 + 14) + 2
    with Image.open(save_contact_sheet(small_set.images[:1], tmp_path / "one.png",
                                       ncols=4)) as im:
        assert im.size == (10 + 8, 12 + 8)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ncols=0), "ncols must be an int >= 1, got 0"),
    (dict(ncols=2, labels=["a"]), r"one entry per image \(4\), got 1"),
])
def test_save_contact_sheet_errors(tmp_path, small_set, kwargs, match):
    with pytest.raises(ValueError, match=match):
        save_contact_sheet(small_set.images, tmp_path / "s.png", **kwargs)


def test_load_source_folder_relative_to_base_dir(tmp_path, small_set):
    from bubbles import load_source

    small_set.to_folder(tmp_path / "sets" / "mine")
    s = load_source("mine", base_dir=tmp_path / "sets")
    assert_allclose(s.images, small_set.images, atol=1 / 65535)
    assert_allclose(load_source(tmp_path / "sets" / "mine").images, s.images)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_source("mine", base_dir=tmp_path)
