"""Stimulus sets: grey images with a table of labels and optional ROI masks.

A :class:`StimulusSet` is what a bubbles session, a brain experiment and a
network probe all show: ``images`` (float32, (n, H, W), in [0, 1]), a ``table``
with one row per image (``stimulus_id``, ``identity``, ``expression`` and any
extra columns) and, when known, region-of-interest masks (``rois``) that serve
as ground truth when a diagnostic image is validated.

User sets are read from a folder of images plus a ``manifest.csv``
(:meth:`StimulusSet.from_folder`) and written back with
:meth:`StimulusSet.to_folder`. :func:`save_contact_sheet` tiles images into
one PNG for a quick look.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

__all__ = ["StimulusSet", "ROI_NAMES", "MANIFEST_COLUMNS", "load_grey", "save_contact_sheet"]

#: Region-of-interest names of the embedded face set.
ROI_NAMES = ("eyes", "brows", "nose", "mouth")
#: Columns a ``manifest.csv`` must have.
MANIFEST_COLUMNS = ("file", "identity", "expression")
_TABLE_COLUMNS = ("stimulus_id", "identity", "expression")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class StimulusSet:
    """Grey images, one table row per image, and optional ROI masks.

    Parameters
    ----------
    images : array_like, shape (n, H, W)
        Grey images with values in [0, 1]; stored as float32.
    table : pandas.DataFrame
        One row per image, in the same order, with at least the columns
        ``stimulus_id`` (unique), ``identity`` and ``expression``; these three
        are stored as str. Extra columns are kept.
    rois : dict of str to array_like of bool, shape (n, H, W), optional
        Region masks per image (the face set uses 'eyes', 'brows', 'nose',
        'mouth').

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> table = pd.DataFrame({"stimulus_id": ["a", "b"], "identity": ["x", "y"],
    ...                       "expression": ["happy", "neutral"]})
    >>> s = StimulusSet(np.zeros((2, 8, 8)), table)
    >>> len(s), s.shape, s.expressions, s.index("b")
    (2, (8, 8), ('happy', 'neutral'), 1)
    """

    def __init__(self, images, table, rois=None):
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[0] == 0:
            raise ValueError("images must be a non-empty array of shape (n, H, W), "
                             f"got shape {images.shape}")
        if not (np.issubdtype(images.dtype, np.number) or images.dtype == bool):
            raise ValueError(f"images must be numeric, got dtype {images.dtype}")
        images = images.astype(np.float32, copy=False)
        if not np.all(np.isfinite(images)):
            raise ValueError("images must be finite, got NaN or inf values")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"images must lie in [0, 1], got values in [{lo:g}, {hi:g}]")
        if not isinstance(table, pd.DataFrame):
            raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
        missing = [c for c in _TABLE_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"table is missing column(s) {missing}; required: "
                             f"{list(_TABLE_COLUMNS)}, got {list(table.columns)}")
        if len(table) != images.shape[0]:
            raise ValueError(f"table must have one row per image: {images.shape[0]} "
                             f"images, got {len(table)} rows")
        table = table.reset_index(drop=True).copy()
        for col in _TABLE_COLUMNS:
            if table[col].isna().any():
                rows = np.flatnonzero(table[col].isna().to_numpy())[:5].tolist()
                raise ValueError(f"table column {col!r} has empty values at rows {rows}")
            table[col] = table[col].astype(str)
        dup = table["stimulus_id"][table["stimulus_id"].duplicated()]
        if len(dup):
            raise ValueError("table column 'stimulus_id' must be unique, got duplicates "
                             f"{sorted(set(dup))[:5]}")
        if rois is not None:
            if not isinstance(rois, dict):
                raise ValueError(f"rois must be a dict of name -> bool (n, H, W) array or "
                                 f"None, got {type(rois).__name__}")
            checked = {}
            for name, roi in rois.items():
                roi = np.asarray(roi)
                if roi.shape != images.shape:
                    raise ValueError(f"rois[{name!r}] must have the images' shape "
                                     f"{images.shape}, got {roi.shape}")
                checked[str(name)] = roi.astype(bool, copy=False)
            rois = checked
        self.images = images
        self.table = table
        self.rois = rois
        self._ids = {sid: i for i, sid in enumerate(table["stimulus_id"])}

    # -- basic access --------------------------------------------------------
    def __len__(self):
        return self.images.shape[0]

    def __repr__(self):
        return (f"StimulusSet(n={len(self)}, shape={self.shape}, "
                f"identities={len(self.identities)}, expressions={self.expressions}, "
                f"rois={None if self.rois is None else tuple(self.rois)})")

    @property
    def shape(self):
        """(H, W) of every image."""
        return tuple(self.images.shape[1:])

    @property
    def expressions(self):
        """Expression labels present, in first-seen order."""
        return tuple(dict.fromkeys(self.table["expression"]))

    @property
    def identities(self):
        """Identity labels present, in first-seen order."""
        return tuple(dict.fromkeys(self.table["identity"]))

    def index(self, stimulus_id):
        """Row index of `stimulus_id` (KeyError naming the id if absent)."""
        try:
            return self._ids[str(stimulus_id)]
        except KeyError:
            known = list(self._ids)[:5]
            raise KeyError(f"stimulus_id {stimulus_id!r} not in this set "
                           f"(first ids: {known})") from None

    def image(self, stimulus_id):
        """The (H, W) image of `stimulus_id`."""
        return self.images[self.index(stimulus_id)]

    def mean_image(self):
        """Pixel-wise mean of all images, float32 (H, W)."""
        return self.images.mean(axis=0, dtype=np.float64).astype(np.float32)

    def subset(self, mask_or_indices):
        """A new set with the rows selected by a boolean mask or integer indices.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> t = pd.DataFrame({"stimulus_id": list("abc"), "identity": list("xyz"),
        ...                   "expression": ["happy", "neutral", "happy"]})
        >>> s = StimulusSet(np.zeros((3, 4, 4)), t)
        >>> s.subset(s.table.expression == "happy").table.stimulus_id.tolist()
        ['a', 'c']
        """
        sel = np.asarray(mask_or_indices)
        if sel.dtype == bool:
            if sel.shape != (len(self),):
                raise ValueError(f"mask_or_indices as a boolean mask must have shape "
                                 f"({len(self)},), got {sel.shape}")
            sel = np.flatnonzero(sel)
        elif sel.size == 0:
            sel = sel.astype(np.intp)
        elif not np.issubdtype(sel.dtype, np.integer) or sel.ndim != 1:
            raise ValueError("mask_or_indices must be a boolean mask or a 1-D sequence "
                             f"of integer indices, got dtype {sel.dtype}, shape {sel.shape}")
        if sel.size == 0:
            raise ValueError("mask_or_indices selects no stimulus; a StimulusSet "
                             "cannot be empty")
        if sel.min() < -len(self) or sel.max() >= len(self):
            raise ValueError(f"mask_or_indices must lie in [0, {len(self)}), got "
                             f"values in [{sel.min()}, {sel.max()}]")
        rois = None if self.rois is None else {k: v[sel] for k, v in self.rois.items()}
        return StimulusSet(self.images[sel], self.table.iloc[sel], rois)

    # -- folders -------------------------------------------------------------
    @classmethod
    def from_folder(cls, path):
        """Read images listed in ``path/manifest.csv``.

        The manifest needs the columns ``file`` (relative to `path`),
        ``identity`` and ``expression``; extra columns are kept. The
        stimulus id is the ``stimulus_id`` column if present, else the file
        stem. Images are converted to grey float32 in [0, 1] by
        :func:`load_grey`. A ``rois.npz`` written by :meth:`to_folder` is read
        back too.

        Raises
        ------
        FileNotFoundError
            No folder, no manifest, or an image file listed but absent.
        ValueError
            A missing column, an empty manifest, duplicate file rows, an
            unreadable image, or images of unequal sizes.

        Examples
        --------
        >>> s = StimulusSet.from_folder("my_faces")          # doctest: +SKIP
        """
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"stimulus folder {str(folder)!r} does not exist")
        manifest = folder / "manifest.csv"
        if not manifest.is_file():
            raise FileNotFoundError(f"stimulus folder {str(folder)!r} has no manifest.csv "
                                    f"(expected columns {list(MANIFEST_COLUMNS)})")
        str_cols = {c: str for c in (*MANIFEST_COLUMNS, "stimulus_id")}
        try:
            table = pd.read_csv(manifest, dtype=str_cols, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise ValueError(f"{str(manifest)!r} is empty: the stimulus set needs at least "
                             f"one row with columns {list(MANIFEST_COLUMNS)}") from None
        table.columns = [str(c).strip() for c in table.columns]
        missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{str(manifest)!r} is missing column(s) {missing}; required: "
                             f"{list(MANIFEST_COLUMNS)}, got {list(table.columns)}")
        if len(table) == 0:
            raise ValueError(f"{str(manifest)!r} lists no images: the stimulus set is empty")
        for col in MANIFEST_COLUMNS:
            if table[col].isna().any():
                rows = (np.flatnonzero(table[col].isna().to_numpy())[:5] + 2).tolist()
                raise ValueError(f"{str(manifest)!r} column {col!r} has empty cells "
                                 f"(file lines {rows})")
        dup = table["file"][table["file"].duplicated()]
        if len(dup):
            raise ValueError(f"{str(manifest)!r} lists file(s) more than once: "
                             f"{sorted(set(dup))[:5]}")
        images = []
        for name in table["file"]:
            images.append(load_grey(folder / name))
            if images[-1].shape != images[0].shape:
                raise ValueError(f"images must all have the same size: {name!r} is "
                                 f"{images[-1].shape} (H, W), {table['file'].iloc[0]!r} "
                                 f"is {images[0].shape}")
        if "stimulus_id" not in table.columns:
            table.insert(0, "stimulus_id", [Path(f).stem for f in table["file"]])
        rois = None
        if (folder / "rois.npz").is_file():
            with np.load(folder / "rois.npz") as z:
                rois = {k: z[k] for k in z.files}
        return cls(np.stack(images), table, rois)

    def to_folder(self, path):
        """Write 16-bit PNGs, ``manifest.csv`` (and ``rois.npz``) to a new folder.

        Files are named ``<stimulus_id>.png`` when every id is a safe file
        name, else ``stim0000.png``, ...; :meth:`from_folder` reads the folder
        back (pixel values to within 1/65535). An existing non-empty folder is
        never written into.

        Returns
        -------
        pathlib.Path
            The folder.
        """
        folder = Path(path)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"{str(folder)!r} exists and is not an empty folder; "
                                  "to_folder never overwrites, choose a new path")
        ids = list(self.table["stimulus_id"])
        safe = all(_SAFE_NAME.match(i) for i in ids) and \
            len({i.lower() for i in ids}) == len(ids)
        files = [f"{i}.png" for i in ids] if safe else \
            [f"stim{k:04d}.png" for k in range(len(ids))]
        folder.mkdir(parents=True, exist_ok=True)
        for name, img in zip(files, self.images):
            arr = np.round(img.astype(np.float64) * 65535.0).astype(np.uint16)
            Image.fromarray(arr).save(folder / name)
        table = self.table.drop(columns="file", errors="ignore")
        table.insert(0, "file", files)
        table.to_csv(folder / "manifest.csv", index=False)
        if self.rois is not None:
            np.savez_compressed(folder / "rois.npz", **self.rois)
        return folder


def load_grey(path):
    """Read one image file as grey float32 (H, W) in [0, 1].

    8-bit images are divided by 255, 16-bit by 65535; colour images become
    luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, as PIL's 'L');
    an alpha channel is dropped.

    Examples
    --------
    >>> img = load_grey("face.png")                          # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image file {str(path)!r}: {err}") from None
    if mode == "1":
        out = arr.astype(np.float32)
    elif mode in ("L", "LA", "RGB", "RGBA", "RGBX"):
        arr = arr.astype(np.float32) / 255.0
        if mode == "LA":
            arr = arr[..., 0]
        elif mode != "L":
            arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        out = arr
    elif mode.startswith("I"):
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"image file {str(path)!r} is a {mode} image with values "
                             f"outside 16-bit [0, 65535]: [{arr.min()}, {arr.max()}]")
        out = arr.astype(np.float32) / 65535.0
    elif mode == "F":
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"image file {str(path)!r} is a float image with values "
                             f"outside [0, 1]: [{arr.min():g}, {arr.max():g}]")
        out = arr
    else:
        raise ValueError(f"image file {str(path)!r} has unsupported PIL mode {mode!r}; "
                         "expected grey (L, I;16), RGB(A) or palette")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def save_contact_sheet(images, path, *, ncols, labels=None, pad=4, background=1.0):
    """Tile grey images into one 8-bit PNG (PIL only), with optional labels.

    Parameters
    ----------
    images : array_like, shape (n, H, W)
        Grey images in [0, 1].
    path : str or path-like
        Output PNG; missing folders are created, an existing file is replaced.
    ncols : int
        Tiles per row.
    labels : sequence of str, optional
        One caption per image, written under its tile.
    pad : int
        Pixels between tiles.
    background : float
        Grey level of the gaps, in [0, 1].

    Returns
    -------
    pathlib.Path
        `path`.

    Examples
    --------
    >>> import numpy as np
    >>> save_contact_sheet(np.zeros((6, 16, 16)), "/tmp/sheet.png", ncols=3)  # doctest: +SKIP
    """
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 2:
        imgs = imgs[None]
    if imgs.ndim != 3 or imgs.shape[0] == 0:
        raise ValueError(f"images must have shape (n, H, W), got {imgs.shape}")
    if not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be an int >= 1, got {ncols!r}")
    if labels is not None and len(labels) != len(imgs):
        raise ValueError(f"labels must have one entry per image ({len(imgs)}), "
                         f"got {len(labels)}")
    n, h, w = imgs.shape
    ncols = min(int(ncols), n)
    nrows = -(-n // ncols)
    font = ImageFont.load_default()
    text_h = 0 if labels is None else 14
    sheet = Image.new("L", (ncols * (w + pad) + pad, nrows * (h + pad + text_h) + pad),
                      int(round(255 * float(np.clip(background, 0, 1)))))
    draw = ImageDraw.Draw(sheet)
    for k, img in enumerate(imgs):
        r, c = divmod(k, ncols)
        x, y = pad + c * (w + pad), pad + r * (h + pad + text_h)
        tile = np.round(np.clip(np.nan_to_num(img), 0, 1) * 255).astype(np.uint8)
        sheet.paste(Image.fromarray(tile), (x, y))
        if labels is not None:
            draw.text((x + 2, y + h + 1), str(labels[k]), fill=0, font=font)
    os.makedirs(Path(path).parent or ".", exist_ok=True)
    sheet.save(path)
    return Path(path)
