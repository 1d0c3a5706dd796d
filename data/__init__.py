"""Embedded defaults of the bubbles toolkit, installed as the package ``bubbles_data``.

==========================  ===========================================================
file                        what, source, licence
==========================  ===========================================================
expression_cnn.pt           weights of the embedded expression CNN (``bubbles ann
                            train``, seed 0; MIT, this project), with its
                            ``expression_cnn.sha256``
stat4ci/GenderFG.tiff       classification images of Gosselin & Schyns (2001),
stat4ci/ExnexFG.tiff        Experiment 1, subject FG, as distributed with the Stat4Ci
stat4ci/facemask.tiff       toolbox (Chauvin et al. 2005, J. Vis. 5(9):1; the toolbox
stat4ci/w1H.jpg             is free software for research use, see stat4ci/README.md):
                            two CIs (24-bit values packed in RGB), the face search
                            region and one face of the experiment
==========================  ===========================================================

:func:`path` finds a file whether the toolkit runs from a clone (editable install) or
from a regular ``pip install`` (the files are package data of the wheel).
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

__all__ = ["path", "STAT4CI_FILES"]

STAT4CI_FILES = ("GenderFG.tiff", "ExnexFG.tiff", "facemask.tiff", "w1H.jpg")


def path(name) -> Path:
    """The file ``name`` (e.g. ``'stat4ci/GenderFG.tiff'``) of the embedded data.

    Raises FileNotFoundError naming the file when the installation lacks it.
    """
    res = files(__name__).joinpath(*str(name).split("/"))
    if not res.is_file():
        raise FileNotFoundError(f"embedded data file {name!r} not found in {files(__name__)} "
                                "(a damaged installation: reinstall bubbles-toolkit)")
    with as_file(res) as p:        # a real path for a regular (unzipped) install
        return Path(p)
