"""analysis.report: what a results folder holds, the sentences, a self-contained page;
the page opened in headless Chromium (every image loads, no console error, the summary
visible, a screenshot kept)."""

import base64
import csv
import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import markupsafe
import numpy as np
import pytest

from analysis.figures import save_figure
from analysis.plan import PlanCell, PlanResult, plot_power
from analysis.report import build_report, collect, region_names
from analysis.simulate import NullObserver, TemplateObserver, simulate_session
from analysis.simulate import label_templates
from bubbles import BubbleSpec, face_set, save_contact_sheet
from commands.analyze import analyze
from commands.compare import main as compare

COLUMNS = ["participant", "session", "trial", "block", "stimulus_id", "identity",
           "expression", "key", "response", "correct", "rt", "n_bubbles",
           "quest_intensity", "quest_mean", "quest_sd", "mask_seed", "mask_index",
           "frames_shown", "dropped_frames", "onset", "psychopyVersion", "frameRate",
           "expName", "date"]


def write_face_session(folder, participant, observer_kind, n_trials=1200, seed=4):
    """A session on the 64 px embedded faces, written as experiments writes one, its
    answers from a template observer (or a random one)."""
    faces = face_set(20, size=64)
    labels = list(faces.table["expression"].astype(str))
    spec = BubbleSpec(shape=(64, 64), sigma=2.5, n_bubbles=10, background=0.5)
    observer = (TemplateObserver(label_templates(faces.images, labels),
                                 internal_noise=1 / 16, seed=seed)
                if observer_kind == "template" else NullObserver(sorted(set(labels))))
    table = simulate_session(spec, faces.images, labels, observer, n_trials, seed=seed)
    stem = Path(folder) / f"{participant}_faces_2026-12-01_1000"
    stem.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {"format": "bubbles.session", "version": 1, "spec": spec.to_dict(),
               "config": {"seed": seed, "stimuli": {"source": "faces", "n_identities": 20,
                                                    "size": 64, "expressions": []}},
               "seed": seed, "seeds": {"mask_seed": seed}, "participant": participant,
               "expName": "faces", "status": "completed",
               "runs": [{"simulate": observer_kind, "responder_seed": seed}],
               "versions": {"bubbles": "0.1.0", "numpy": np.__version__}}
    Path(f"{stem}.json").write_text(json.dumps(sidecar))
    ids = faces.table["stimulus_id"].to_numpy()
    data = table.data
    centers = table.center_list()
    with open(f"{stem}.csv", "w", newline="") as fh, open(f"{stem}_centers.jsonl", "w") as fc:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for t in range(n_trials):
            i = int(data["stimulus_index"].iloc[t])
            row = {"participant": participant, "session": 1, "trial": t, "block": "main",
                   "stimulus_id": ids[i], "identity": ids[i][:4], "expression": labels[i],
                   "key": "f", "response": data["response"].iloc[t],
                   "correct": int(data["correct"].iloc[t]), "rt": 0.5, "n_bubbles": 10,
                   "quest_intensity": 1.0, "quest_mean": 1.0, "quest_sd": 0.2,
                   "mask_seed": seed, "mask_index": t, "frames_shown": 1,
                   "dropped_frames": 0, "onset": 1.0 * t, "psychopyVersion": "2026.2.5",
                   "frameRate": 60.0, "expName": "faces", "date": "2026-12-01_1000"}
            w.writerow([row[c] for c in COLUMNS])
            fc.write(json.dumps({"trial": t, "mask_seed": seed, "mask_index": t,
                                 "centers": [np.asarray(centers[t]).tolist()]}) + "\n")
    return Path(f"{stem}.csv")


def write_fmri(folder):
    """An fMRI results folder as ``bubbles fmri analyze`` writes it (its NIfTI peak map
    and summary; no BOLD runs)."""
    nib = pytest.importorskip("nibabel")
    folder.mkdir(parents=True)
    vol = np.random.default_rng(0).random((12, 14, 12)).astype(np.float32) * 2
    vol[3:5, 10:12, 5:7] = 6.0
    img = nib.Nifti1Image(vol, np.diag([3.0, 3.0, 3.0, 1.0]))
    nib.save(img, str(folder / "peak_z.nii.gz"))
    summary = {"n_voxels": 2016, "n_trials": 320, "n_runs": 4, "resolution": [64, 64],
               "threshold": 5.1, "correction": "rft-bonferroni", "n_voxels_significant": 8,
               "strongest_voxels": [{"ijk": [3, 10, 5], "peak_z": 6.0, "n_significant": 40,
                                     "roi_eyes_z": 2.5, "roi_mouth_z": 0.1}],
               "runs": []}
    (folder / "summary.json").write_text(json.dumps(summary))


def write_plan(folder):
    cells = [PlanCell({"sigma": 10.0, "n_bubbles": 20, "n_trials": n, "method": "regression"},
                      20, r, 0.1, p, p, p, p, 0.75) for n, r, p in ((250, 0.4, 0.3),
                                                                     (500, 0.6, 0.9))]
    res = PlanResult("behaviour", "template", cells, {}, "analytic")
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"format": "bubbles.plan", "version": 1,
                                                  **res.to_dict()}))
    save_figure(plot_power(res), folder / "power.png")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder with sessions, two analyses, a comparison, an fMRI analysis, a
    plan and a loose figure."""
    root = tmp_path_factory.mktemp("results")
    person = write_face_session(root / "session", "person", "template")
    other = write_face_session(root / "session", "random", "random", seed=8)
    for who, csv_path in (("person", person), ("random", other)):
        assert analyze([str(csv_path), "--out", str(root / "analysis" / who),
                        "--quiet"]) == 0
    assert compare([str(root / "analysis/person/ci.npz"), str(root / "analysis/random/ci.npz"),
                    "--out", str(root / "compare"), "--n-permutations", "20",
                    "--n-splits", "4"]) == 0
    write_fmri(root / "fmri")
    write_plan(root / "plan")
    faces = face_set(2, size=64)
    save_contact_sheet(faces.images, root / "stimuli" / "stimuli.png", ncols=6)
    return root


def test_collect_finds_every_result(results):
    found = collect(results)
    assert [s["participant"] for s in found.sessions] == ["person", "random"]
    assert found.sessions[0]["n_main"] == 1200 and 0.6 < found.sessions[0]["accuracy"] < 0.95
    assert [a["folder"].name for a in found.analyses] == ["person", "random"]
    assert len(found.comparisons) == len(found.fmri) == len(found.plans) == 1
    assert [f["name"] for f in found.figures] == [os.path.join("stimuli", "stimuli.png")]
    assert not found.problems


@pytest.fixture(scope="module")
def report(results):
    return build_report(results)


def test_report_summary_sentences(report):
    person, random_, comparison, fmri, plan = report.summary
    assert person.startswith("person (simulated person (template observer), 1,200 trials")
    assert "the map is significant in 3 clusters: the mouth (" in person
    assert "eye on the image's left" in person
    assert random_.startswith("random (simulated (random), 1,200 trials") and "nothing significant" in random_
    assert comparison.startswith("random matches person's map: r = ")
    assert "8 of 2,016 voxels" in fmri and "reads the eyes" in fmri
    assert plan.startswith("plan (plan, template observer): cluster test at power >= 0.8")
    html = report.html
    assert html.index('id="summary"') < html.index('id="images"')
    for sentence in report.summary:
        assert str(markupsafe.escape(sentence)) in html


def test_report_is_self_contained(report):
    html = report.html
    # every image is embedded; nothing is loaded from a path or the web
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)\s*=\s*["\'](https?:|file:|//)', html)
    # nilearn's viewer of peak_z is inlined in an iframe, its favicon link removed
    assert html.count("<iframe") == 1 and "brainsprite" in html
    assert "favicon" not in html
    # parameters, seeds and versions
    assert "mask_seed" in html and "numpy" in html and "bubbles analyze " in html


def test_static_report_draws_slices(results):
    html = build_report(results, static=True).html
    assert "<iframe" not in html and "peak_z (slices)" in html


def test_region_names_use_the_face_parts():
    rois = {k: v.mean(axis=0) >= 0.5 for k, v in face_set(4, size=64).rois.items()}
    z = np.zeros((64, 64))
    clusters = []
    for name in ("eyes", "mouth"):
        r, c = np.argwhere(rois[name]).mean(axis=0).round().astype(int)
        z[rois[name]] = 4.0
        clusters.append({"peak": [int(r), int(c)] if rois[name][r, c] else
                         np.argwhere(rois[name])[0].tolist(), "centroid": [r, c]})
    # the two eyes are two clusters: name each by its side
    lab = np.argwhere(rois["eyes"])
    left = lab[lab[:, 1] < 32][0].tolist()
    names = region_names(z, [{"peak": left, "centroid": left}, clusters[1]], threshold=2.7,
                         rois=rois)
    assert names == ["the eye on the image's left", "the mouth"]
    assert region_names(z, clusters[1:], threshold=2.7) == ["the lower part of the image"]


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="holds no result of the toolkit"):
        build_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        build_report(tmp_path / "nope")


def test_damaged_files_are_listed_not_fatal(results, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(results / "analysis", root / "analysis")
    (root / "analysis" / "person" / "summary.json").write_text("{broken")
    report = build_report(root)
    assert any("summary.json: not readable JSON" in n for n in report.notes)
    assert 'id="notes"' in report.html


# -- the page in a browser ----------------------------------------------------------------
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome")) if p), None)

CHECK = """(async () => {
  const docs = [document];
  for (const f of document.querySelectorAll('iframe')) {
    if (!f.contentDocument || f.contentDocument.readyState !== 'complete')
      await new Promise(r => f.addEventListener('load', r, {once: true}));
    docs.push(f.contentDocument);
  }
  const imgs = docs.flatMap(d => Array.from(d.images));
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  await new Promise(r => setTimeout(r, 300));
  const s = document.getElementById('summary');
  const box = s.getBoundingClientRect();
  const style = getComputedStyle(s);
  return JSON.stringify({
    images: imgs.map(i => ({ok: i.complete && i.naturalWidth > 0,
                            src: i.getAttribute('src').slice(0, 30)})),
    frames: docs.length - 1,
    summary: {top: box.top, height: box.height, width: box.width,
              shown: style.visibility === 'visible' && style.display !== 'none',
              text: s.innerText},
    height: innerHeight});
})()"""


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: JSON messages ending in NUL on file descriptors 3 and
    4), so no websocket client or network port is needed."""

    def __init__(self, exe, profile):
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()
        hi = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]

        def child():
            os.dup2(hi[0], 3)
            os.dup2(hi[1], 4)

        self.log = open(Path(profile) / "stderr.txt", "wb")
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--window-size=1280,900", "about:blank"],
            close_fds=False, preexec_fn=child, stdout=subprocess.DEVNULL, stderr=self.log)
        for fd in (to_child, from_child, *hi):
            os.close(fd)
        self.events, self._id, self._queue = [], 0, queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while chunk := os.read(self._in, 1 << 16):
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                self._queue.put(json.loads(msg))
        self._queue.put(None)

    def _next(self, deadline):
        msg = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
        if msg is None:
            raise RuntimeError("chromium exited: " + Path(self.log.name).read_text()[-500:])
        return msg

    def call(self, method, params=None, session=None, timeout=60):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait(self, event, session, timeout=60):
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event and e.get("sessionId") == session
                      for e in self.events):
            self.events.append(self._next(deadline))

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, queue.Empty):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        self.log.close()


def open_in_chromium(browser, page, screenshot):
    """Load ``page`` from its file in a new tab: what the images, the console and the
    network did, and a screenshot of the first screen."""
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = browser.call("Target.attachToTarget", {"targetId": target,
                                               "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Page", "Network"):
        browser.call(f"{domain}.enable", session=s)
    browser.call("Page.navigate", {"url": Path(page).resolve().as_uri()}, session=s)
    browser.wait("Page.loadEventFired", s)
    res = browser.call("Runtime.evaluate", {"expression": CHECK, "awaitPromise": True,
                                            "returnByValue": True}, session=s)
    assert "exceptionDetails" not in res, res
    out = json.loads(res["result"]["value"])
    shot = browser.call("Page.captureScreenshot", {"format": "png"}, session=s)
    Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
    time.sleep(0.3)                                        # late console messages
    browser.call("Target.closeTarget", {"targetId": target})
    mine = [e for e in browser.events if e.get("sessionId") == s]

    def params(name):
        return [e["params"] for e in mine if e.get("method") == name]

    out["errors"] = ([p for p in params("Runtime.consoleAPICalled")
                      if p["type"] in ("error", "assert")]
                     + params("Runtime.exceptionThrown")
                     + [p["entry"] for p in params("Log.entryAdded")
                        if p["entry"]["level"] == "error"]
                     + params("Network.loadingFailed"))
    out["requests"] = [p["request"]["url"] for p in params("Network.requestWillBeSent")]
    return out


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed (Debian package 'chromium'; "
                    "`make test` installs it)")
    with tempfile.TemporaryDirectory() as profile:
        browser = DevTools(CHROMIUM, profile)
        try:
            yield browser
        finally:
            browser.close()


def test_the_browser_check_sees_broken_pages(chromium, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><div id="summary">s</div><img src="data:image/png;base64,'
                   'AAAA"><script>console.error("boom")</script></body></html>')
    out = open_in_chromium(chromium, bad, tmp_path / "bad.png")
    assert [i["ok"] for i in out["images"]] == [False]
    assert any("boom" in json.dumps(e) for e in out["errors"])


def test_report_in_headless_chromium(chromium, report, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(report.html, encoding="utf-8")
    shot = tmp_path / "report.png"              # kept under the test's output
    out = open_in_chromium(chromium, page, shot)
    assert len(out["images"]) >= 6 and all(i["ok"] for i in out["images"]), out["images"]
    assert out["frames"] == 1                     # nilearn's viewer, loaded
    assert out["errors"] == []
    assert all(u.startswith(("file:", "data:", "about:")) for u in out["requests"]), \
        [u[:60] for u in out["requests"]]
    summary = out["summary"]
    assert summary["shown"] and 0 <= summary["top"] < out["height"] and summary["height"] > 50
    assert report.summary[0] in summary["text"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
