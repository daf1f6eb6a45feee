"""Fast reading of a class-folder image tree (``<root>/<class>/*.jpg|png``) into a uint8 NHWC array.

Two decoders give bit-identical pixels: a parallel ``tf.data`` pipeline (``tf.io.decode_jpeg`` with
``dct_method="INTEGER_ACCURATE"``, the libjpeg settings Pillow uses; ``tf.io.decode_png``), the default, and Pillow in
a thread pool. On 2 shared cores all 60,000 CIFAR-10 JPEGs load in about 9 s with the first and 18 s with the second
(``bench/data_loading.py``). When the fast path meets a broken or wrongly sized file, the Pillow path re-reads the
files to name the culprit.

Example (on the project's shared JPEG copies, ``../shared/data`` beside a checkout):

>>> from qrobust_keras.data.image_folder import list_image_folder, load_image_folder
>>> paths, labels, classes = list_image_folder("../shared/data/cifar10-jpeg/test")   # no decoding
>>> len(paths), classes[:3]
(10000, ['airplane', 'automobile', 'bird'])
>>> x, y, classes = load_image_folder("../shared/data/cifar10-jpeg/test", paths=paths[:16])   # all without paths=
>>> x.shape, x.dtype.name, y.dtype.name
((16, 32, 32, 3), 'uint8', 'int64')
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from qrobust_keras.data.errors import CorruptDataError, DataNotFoundError

__all__ = ["IMAGE_SUFFIXES", "DECODERS", "list_image_folder", "load_image_folder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DECODERS = ("tf", "pil")


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


def _decode_all_tf(paths: Sequence[str], size: tuple[int, int]) -> np.ndarray:
    """Decode with a parallel tf.data pipeline; raises tf.errors.OpError on a broken or wrongly sized image."""
    from qrobust_keras._keras import tf

    h, w = int(size[0]), int(size[1])

    def decode(path):
        raw = tf.io.read_file(path)
        image = tf.cond(tf.io.is_jpeg(raw),
                        lambda: tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE"),
                        lambda: tf.io.decode_png(raw, channels=3))
        return tf.ensure_shape(image, [h, w, 3])

    out = np.empty((len(paths), h, w, 3), np.uint8)
    ds = tf.data.Dataset.from_tensor_slices(list(map(str, paths))).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(2048)
    start = 0
    for batch in ds.as_numpy_iterator():
        out[start:start + len(batch)] = batch
        start += len(batch)
    return out


def load_image_folder(root: str | os.PathLike, class_names: Sequence[str] | None = None,
                      image_size: tuple[int, int] | None = (32, 32), num_workers: int | None = None,
                      paths: Sequence[str] | None = None, decoder: str = "tf"
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every image of a class-folder tree.

    Args:
        root: folder with one sub-folder per class.
        class_names: label order (index = label); default sorted folder names.
        image_size: required ``(height, width)``; images of another size raise. ``None`` accepts the size of the
            first image (all must match).
        num_workers: Pillow decoding threads (default ``2 * cpu_count``, at most 16).
        paths: decode only these files (a subset of ``list_image_folder(root)``), e.g. for quick tests.
        decoder: ``"tf"`` (parallel tf.data pipeline, default) or ``"pil"`` (Pillow thread pool); same pixels.

    Returns:
        ``(x, y, class_names)``: uint8 ``(n, h, w, 3)``, int64 ``(n,)``, the class names.

    Raises:
        DataNotFoundError: missing folders / no images. CorruptDataError: undecodable or wrongly sized image.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}; got decoder={decoder!r}")
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
    if decoder == "tf":
        from qrobust_keras._keras import tf

        try:
            return _decode_all_tf(all_paths, image_size), labels, class_names
        except tf.errors.OpError:
            pass  # a broken or wrongly sized file: decode with Pillow below, which names it
    out = np.empty((len(all_paths), image_size[0], image_size[1], 3), np.uint8)
    workers = num_workers or min(16, 2 * (os.cpu_count() or 1))

    def work(i: int) -> None:
        out[i] = _decode(all_paths[i], image_size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, range(len(all_paths)), chunksize=256):
            pass
    return out, labels, class_names
