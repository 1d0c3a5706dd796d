"""TrialTable: session files in, centres regenerated and checked, clear errors."""

import csv
import json
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from analysis import TrialTable
from analysis.session_files import SessionFileError, check_row, read_session, session_paths
from bubbles import BubbleSpec, StimulusSet, center_maps, sample_centers


def test_read_session_regenerates_centres(session_csv):
    table = TrialTable.read(session_csv)
    assert len(table) == 60
    assert table.spec == BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=6)
    assert table.sidecar["participant"] == "P01"
    row = table.data.iloc[17]
    again = sample_centers(table.spec.replace(n_bubbles=int(row.n_bubbles)),
                           int(row.mask_seed), [int(row.mask_index)])[0]
    assert_allclose(table.centers[0][17], again, atol=0)
    assert [len(c) for c in table.centers[0]] == table.data["n_bubbles"].tolist()
    assert table.center_maps().shape == (60, 32 * 32)
    assert set(table.responses("correct")) <= {0.0, 1.0}
    assert table.responses("rt").dtype == np.float64


def test_recorded_and_regenerated_agree(session_csv):
    a = TrialTable.read(session_csv, centers="recorded")
    b = TrialTable.read(session_csv, centers="regenerate")
    for x, y in zip(a.centers[0], b.centers[0]):
        assert_allclose(x, y, atol=0)


def test_multiscale_session(tmp_path, make_session):
    spec = BubbleSpec(shape=(32, 32), sigma=1.5, n_bubbles=12, bands=3)
    path = make_session(tmp_path, spec, n_trials=20)
    table = TrialTable.read(path)
    assert len(table.centers) == 3
    maps = table.center_maps()
    assert len(maps) == 3
    totals = sum(np.asarray(m.sum(axis=1)).ravel() for m in maps)
    assert_allclose(totals, table.data["n_bubbles"], atol=0)


def test_half_written_last_line_is_ignored_with_warning(session_csv):
    with open(session_csv, "a") as fh:
        fh.write("P01,1,60,main,id00_happy,0,happy,f,ha")     # crash mid-write
    with pytest.warns(UserWarning, match="half-written last line"):
        table = TrialTable.read(session_csv)
    assert len(table) == 60
    centers = session_paths(session_csv)["centers"]
    with open(centers, "a") as fh:
        fh.write('{"trial": 60, "mask_seed": 11, "mask_in')
    with pytest.warns(UserWarning, match="half-written"):
        assert len(TrialTable.read(session_csv)) == 60


def test_recorded_centres_that_disagree_are_an_error(session_csv):
    path = session_paths(session_csv)["centers"]
    lines = path.read_text().splitlines()
    d = json.loads(lines[5])
    d["centers"][0][0] = [0, 0] if d["centers"][0][0] != [0, 0] else [1, 1]
    lines[5] = json.dumps(d)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="recorded centres of trial 5 .* differ"):
        TrialTable.read(session_csv)
    # the recorded ones can still be used on purpose
    assert len(TrialTable.read(session_csv, centers="recorded")) == 60


def test_missing_files_and_bad_sidecar(session_csv):
    paths = session_paths(session_csv)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrialTable.read(paths["csv"].with_name("nope.csv"))
    paths["centers"].unlink()
    assert len(TrialTable.read(session_csv)) == 60          # regenerated
    with pytest.raises(FileNotFoundError, match="centres file"):
        TrialTable.read(session_csv, centers="recorded")
    with pytest.raises(ValueError, match="'centers' must be one of"):
        TrialTable.read(session_csv, centers="guess")
    side = json.loads(paths["sidecar"].read_text())
    side["format"] = "psychopy"
    paths["sidecar"].write_text(json.dumps(side))
    with pytest.raises(ValueError, match="must have format 'bubbles.session'"):
        TrialTable.read(session_csv)
    paths["sidecar"].unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        TrialTable.read(session_csv)


def _rewrite(path, column, row, value):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


def test_response_errors(session_csv):
    _rewrite(session_csv, "rt", 4, "")
    table = TrialTable.read(session_csv)
    with pytest.raises(ValueError, match=r"'rt' has 1 missing value\(s\) \(first rows \[4\]\)"):
        table.responses("rt")
    assert len(table.dropna("rt")) == 59
    _rewrite(session_csv, "rt", 7, "fast")
    table = TrialTable.read(session_csv)
    with pytest.raises(ValueError, match="'rt' must be numeric; non-numeric value"):
        table.responses("rt")
    with pytest.raises(ValueError, match="response column 'accuracy' is not in the table"):
        table.responses("accuracy")


def _set(path, line, column, value):
    """Set one cell of a CSV (line numbers as an editor shows them, header = 1)."""
    lines = path.read_text().splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    fields = next(csv.reader([lines[line - 1]]))
    fields[header.index(column)] = value
    lines[line - 1] = ",".join(fields) + "\n"
    path.write_text("".join(lines))


@pytest.mark.parametrize("line, column, value, expected", [
    (5, "correct", "2", "expected 0 or 1"),
    (9, "correct", "7", "expected 0 or 1"),
    (3, "correct", "", "expected 0 or 1"),
    (61, "correct", "yes", "expected 0 or 1"),                      # the last row
    (5, "trial", "2", "expected 3 (trials are numbered 0, 1, 2 ... in file order"),
    (12, "n_bubbles", "12.5", "expected a whole number >= 1"),
    (12, "n_bubbles", "0", "expected a whole number >= 1"),
    (4, "mask_index", "9", "expected 2 (the trial number)"),
    (10, "mask_seed", "x", "expected a whole number >= 0"),
    (7, "block", "mian", "expected 'practice' or 'main'"),
    (8, "quest_intensity", "nan", "expected a finite number"),
])
def test_bad_values_are_refused_naming_file_line_and_column(session_csv, line, column,
                                                            value, expected):
    _set(session_csv, line, column, value)
    pattern = (rf"'.*{re.escape(session_csv.name)}' line {line} column '{column}' is "
               rf"{re.escape(repr(value))}, {re.escape(expected)}")
    with pytest.raises(SessionFileError, match=pattern):
        TrialTable.read(session_csv)
    with pytest.raises(ValueError, match=pattern):          # whichever centres mode
        TrialTable.read(session_csv, centers="regenerate")


def test_a_row_missing_in_the_middle_is_refused(session_csv):
    lines = session_csv.read_text().splitlines(keepends=True)
    del lines[21]                                    # trial 20 gone: 19, 21, ...
    session_csv.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"line 22 column 'trial' is '21', expected 20 "
                                         r"\(trials are numbered 0, 1, 2 ... in file "
                                         r"order: a row is missing"):
        TrialTable.read(session_csv, centers="regenerate")


def test_a_csv_cut_in_a_middle_line_names_the_csv(session_csv):
    data = session_csv.read_bytes()
    starts = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    session_csv.write_bytes(data[: starts[30] + 25])     # cut inside trial 30's row
    with pytest.raises(SessionFileError) as err:
        TrialTable.read(session_csv)
    assert err.value.path == session_csv and err.value.line == 32
    assert re.search(r"the CSV ends after 30 complete trial\(s\) but \S+_centers.jsonl "
                     r"records 30 more \(trials 30 to 59\)", str(err.value))
    # without the centres file the CSV reads as an interrupted session of 30 trials
    with pytest.warns(UserWarning, match="half-written last line"):
        assert len(TrialTable.read(session_csv, centers="regenerate")) == 30


def test_centres_missing_for_recorded_trials_are_refused(session_csv):
    centers = session_paths(session_csv)["centers"]
    lines = centers.read_text().splitlines(keepends=True)
    centers.write_text("".join(lines[:40]))
    with pytest.raises(ValueError, match=r"_centers.jsonl' line 41 is missing: .* has the "
                                         r"centres of 40 trial\(s\) but .* has 60 rows"):
        TrialTable.read(session_csv)
    assert len(TrialTable.read(session_csv, centers="regenerate")) == 60
    lines[7] = json.dumps({**json.loads(lines[7]), "trial": 9}) + "\n"
    centers.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"_centers.jsonl' line 8 has trial 9 where "
                                         r"trial 7 was expected"):
        TrialTable.read(session_csv)


def test_a_session_without_trials_is_refused(session_csv):
    lines = session_csv.read_text().splitlines(keepends=True)
    session_csv.write_text(lines[0])
    session_paths(session_csv)["centers"].write_text("")
    with pytest.raises(ValueError, match=r"has a header but no complete trial"):
        TrialTable.read(session_csv)


def test_the_reader_is_the_one_the_resume_uses(session_csv):
    """Nothing is changed on disk; sizes say where the complete trials end."""
    size = session_csv.stat().st_size
    with open(session_csv, "a") as fh:
        fh.write("P01,1,60,main,id00_h")
    found = read_session(session_csv)
    assert len(found.rows) == len(found.centers) == 60
    assert found.sizes["csv"] == size and session_csv.stat().st_size == size + 20
    assert found.rows[3]["trial"] == "3" and found.centers[3]["trial"] == 3
    assert found.dropped == ["dropped half-written last line of "
                             f"{session_csv.name}: 'P01,1,60,main,id00_h'"]
    assert check_row({"trial": "0", "block": "main", "correct": "1"}, 0) is None
    assert check_row({"trial": "1"}, 0).startswith("column 'trial' is '1', expected 0")


def test_stimulus_checks(session_csv):
    table = TrialTable.read(session_csv)
    ids = [f"id{i:02d}_happy" for i in range(3)]         # id03 missing
    stim = SimpleNamespace(images=np.zeros((3, 32, 32), np.float32),
                           table=pd.DataFrame({"stimulus_id": ids}))
    with pytest.raises(ValueError, match=r"1 stimulus id\(s\) are not in the stimulus set"):
        table.check_stimuli(stim)
    wrong = SimpleNamespace(images=np.zeros((4, 64, 64), np.float32),
                            table=pd.DataFrame({"stimulus_id": ids + ["id03_happy"]}))
    with pytest.raises(ValueError, match=r"shape \(64, 64\) but the session spec has shape"):
        TrialTable.read(session_csv, stimuli=wrong)


def test_from_arrays_and_select(small_spec, small_centers):
    table = TrialTable.from_arrays(small_spec, small_centers,
                                   correct=np.arange(400) % 2,
                                   rt=np.linspace(0.3, 1.0, 400))
    assert list(table.data.columns[:1]) == ["trial"]
    assert (table.data["n_bubbles"] == 5).all()
    sub = table.select(table.data["correct"].to_numpy() == 1)
    assert len(sub) == 200
    assert_allclose(sub.center_maps().toarray(),
                    center_maps(small_spec, small_centers[1::2]).toarray())
    with pytest.raises(ValueError, match="column 'rt' must have one value per trial"):
        TrialTable.from_arrays(small_spec, small_centers, rt=[1, 2])


def test_mean_stimulus_reads_a_folder_relative_to_the_session(tmp_path, make_session,
                                                              monkeypatch):
    spec = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=6)
    csv = make_session(tmp_path / "data", spec, n_trials=8)
    images = np.stack([np.full((32, 32), v, np.float32) for v in (0.2, 0.4, 0.6, 0.8)])
    table = pd.DataFrame({"stimulus_id": [f"id{i:02d}_happy" for i in range(4)],
                          "identity": [str(i) for i in range(4)],
                          "expression": ["happy"] * 4})
    StimulusSet(images, table).to_folder(tmp_path / "data" / "stims")
    sidecar_path = csv.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["config"]["stimuli"] = {"source": "stims"}          # relative to the CSV
    sidecar_path.write_text(json.dumps(sidecar))
    monkeypatch.chdir(tmp_path)                                 # not the CSV's folder
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg = TrialTable.read(csv).mean_stimulus()
    assert bg.shape == (32, 32) and bg[0, 0] == pytest.approx(0.5, abs=1e-3)
    # another size than the spec: None with a warning that says why
    sidecar["config"]["stimuli"] = {"source": "faces", "n_identities": 1, "size": 64}
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.warns(UserWarning, match=r"have shape \(64, 64\), the session spec "
                                         r"\(32, 32\)"):
        assert TrialTable.read(csv).mean_stimulus() is None
    sidecar["config"]["stimuli"] = {"source": "moved"}
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.warns(UserWarning, match="cannot rebuild the session's stimuli 'moved'"):
        assert TrialTable.read(csv).mean_stimulus() is None
