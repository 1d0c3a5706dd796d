"""A regular (non-editable) install carries the embedded data: the wheel holds the
network's weights and the Stat4Ci files, and an installed copy finds them."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import bubbles_data

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "--quiet", "-w", str(out), str(ROOT)],
                         capture_output=True, text=True)
    if res.returncode and "No module named" in res.stderr and "setuptools" in res.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert res.returncode == 0, res.stderr[-2000:]
    (path,) = out.glob("bubbles_toolkit-*.whl")
    return path


def test_the_wheel_carries_the_embedded_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ["expression_cnn.pt", "expression_cnn.sha256",
                 *(f"stat4ci/{f}" for f in bubbles_data.STAT4CI_FILES)]:
        assert f"bubbles_data/{name}" in names, name
    assert "analysis/templates/report.html.j2" in names          # bubbles report
    for package in ("bubbles", "analysis", "analysis/fmri", "experiments", "ann_bridge",
                    "commands"):
        assert f"{package}/__init__.py" in names


def test_an_installed_copy_finds_its_data_outside_the_clone(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--target", str(target), str(wheel)], check=True)
    code = ("import bubbles_data, analysis.io as io; "
            "p = bubbles_data.path('stat4ci/GenderFG.tiff'); "
            "w = bubbles_data.path('expression_cnn.pt'); "
            "r = io.stat4ci_demo(); "
            "print(p.is_file(), w.is_file(), str(p).startswith(%r), "
            "round(r.pixel.threshold, 2))" % str(target))
    # -S: no site module, so the clone's editable-install hook (a .pth file) is not
    # loaded; the installed copy and the environment's other packages are put on the path
    site = sysconfig.get_paths()["purelib"]
    out = subprocess.run([sys.executable, "-S", "-c",
                          f"import sys; sys.path[:0] = [{str(target)!r}, {site!r}]; " + code],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True", "True", "3.3"]
