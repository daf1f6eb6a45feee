"""Fast reading of a class-folder image tree (``<root>/<class>/*.jpg|png``) into a uint8 NHWC array.

Decoding uses Pillow in a thread pool (Pillow releases the GIL while decoding): all 60,000 CIFAR-10 JPEGs load in
about 10 s on 2 cores (``bench/data_loading.py``).

Example:

>>> from qrobust_keras.data.image_folder import load_image_folder
>>> x, y, classes = load_image_folder("cifar10-jpeg/test")     # (10000, 32, 32, 3) uint8, int64 labels
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from qrobust_keras.data.errors import CorruptDataError, DataNotFoundError

__all__ = ["IMAGE_SUFFIXES", "list_image_folder", "load_image_folder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_image_folder(root: str | os.PathLike, class_names: Sequence[str] | None = None
                      ) -> tuple[list[str], np.ndarray, list[str]]:
    """Image paths and labels of ``root/<class>/*``, classes in ``class_names`` order (default: sorted folders).

    Files inside a class are taken in sorted name order. Raises DataNotFoundError for a missing root or class
    folder, and ValueError for folders that are not among ``class_names``.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataNotFoundError(f"image folder {root!r} does not exist; expected {root}/<class>/*.jpg|png")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if class_names is None:
        class_names = folders
    extra = sorted(set(folders) - set(class_names))
    if extra:
        raise ValueError(f"{root!r} has class folders {extra} that are not among class_names={list(class_names)}")
    paths, labels = [], []
    for k, name in enumerate(class_names):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            raise DataNotFoundError(f"class folder {folder!r} is missing; expected one folder per class: "
                                    f"{list(class_names)}")
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
        paths += [os.path.join(folder, f) for f in files]
        labels += [k] * len(files)
    if not paths:
        raise DataNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {root!r}/<class>/")
    return paths, np.asarray(labels, np.int64), list(class_names)


def _decode(path: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptDataError(f"cannot decode image {path!r}: {type(exc).__name__}: {exc}") from exc
    if size is not None and arr.shape[:2] != tuple(size):
        raise CorruptDataError(f"image {path!r} is {arr.shape[1]}x{arr.shape[0]} pixels; expected "
                               f"{size[1]}x{size[0]}")
    return arr


def load_image_folder(root: str | os.PathLike, class_names: Sequence[str] | None = None,
                      image_size: tuple[int, int] | None = (32, 32), num_workers: int | None = None,
                      paths: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every image of a class-folder tree.

    Args:
        root: folder with one sub-folder per class.
        class_names: label order (index = label); default sorted folder names.
        image_size: required ``(height, width)``; images of another size raise. ``None`` accepts the size of the
            first image (all must match).
        num_workers: decoding threads (default ``2 * cpu_count``, at most 16).
        paths: decode only these files (a subset of ``list_image_folder(root)``), e.g. for quick tests.

    Returns:
        ``(x, y, class_names)``: uint8 ``(n, h, w, 3)``, int64 ``(n,)``, the class names.

    Raises:
        DataNotFoundError: missing folders / no images. CorruptDataError: undecodable or wrongly sized image.
    """
    all_paths, labels, class_names = list_image_folder(root, class_names)
    if paths is not None:
        index = {p: i for i, p in enumerate(all_paths)}
        missing = [p for p in paths if p not in index]
        if missing:
            raise ValueError(f"paths must be files listed under {os.fspath(root)!r}; not found: {missing[:3]}")
        labels = labels[[index[p] for p in paths]]
        all_paths = list(paths)
    if image_size is None:
        image_size = _decode(all_paths[0], None).shape[:2]
    out = np.empty((len(all_paths), image_size[0], image_size[1], 3), np.uint8)
    workers = num_workers or min(16, 2 * (os.cpu_count() or 1))

    def work(i: int) -> None:
        out[i] = _decode(all_paths[i], image_size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, range(len(all_paths)), chunksize=256):
            pass
    return out, labels, class_names
