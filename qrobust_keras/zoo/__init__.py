"""The model zoo: trained robust models shipped inside the package, each with its int8 file and a model card.

Every entry is a folder ``qrobust_keras/zoo/NAME/`` holding ``model.h5`` (the trained QKeras model, inputs in
[0, 1] for images, MFCC features for the DS-CNN), ``model.int8.tflite`` (made by the library's exporter, TFLite Micro
builtin ops only) and ``card.json``, the model card. Cards are written by :func:`qrobust_keras.zoo.publish.publish`
from the evaluation code run on the shipped files, never by hand; ``card.json`` records each file's sha256, and
loading checks it.

Example:

>>> import qrobust_keras as qrk
>>> names = qrk.zoo.list()
>>> all(qrk.zoo.card(n)["name"] == n for n in names)
True
>>> model = qrk.zoo.load(names[0]) if names else None       # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
from typing import Any

__all__ = ["ZOO_DIR", "ZooError", "list", "card", "load", "tflite_path", "model_path", "verify", "sha256_file",
           "card_markdown", "REQUIRED_KEYS", "resolve"]

ZOO_DIR = os.path.dirname(os.path.abspath(__file__))
MODEL_FILE = "model.h5"
TFLITE_FILE = "model.int8.tflite"
CARD_FILE = "card.json"
REQUIRED_KEYS = ("name", "dataset", "eval_samples", "clean_accuracy", "robust_accuracy", "suite", "int8", "files")
PREFIX = "zoo:"


class ZooError(ValueError):
    """An unknown zoo name, or a shipped file that is missing, truncated or corrupted."""


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list(root: str = ZOO_DIR) -> builtins.list[str]:  # noqa: A001 - the zoo API name users expect (larq-zoo style)
    """Names of the shipped models (folders with a card), sorted."""
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, CARD_FILE)))


def _entry(name: str, root: str) -> str:
    if not isinstance(name, str) or name not in list(root):
        raise ZooError(f"name={name!r} is not a zoo model; available: {', '.join(list(root)) or 'none'}")
    return os.path.join(root, name)


def card(name: str, root: str = ZOO_DIR) -> dict[str, Any]:
    """The model card of ``name`` as a dict (see docs/zoo.md for its keys).

    Raises:
        ZooError: unknown name, or a card that is not valid JSON or lacks a required key.
    """
    path = os.path.join(_entry(name, root), CARD_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ZooError(f"the card {path!r} cannot be read ({exc}); reinstall qrobust-keras") from None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ZooError(f"the card {path!r} lacks the required keys {missing}")
    return data


def verify(name: str, root: str = ZOO_DIR) -> None:
    """Check every file listed in the card against its sha256.

    Raises:
        ZooError: a file missing, truncated or changed; the message names the file.
    """
    entry = _entry(name, root)
    for file, expected in card(name, root)["files"].items():
        path = os.path.join(entry, file)
        if not os.path.isfile(path):
            raise ZooError(f"zoo model {name!r}: file {path!r} is missing; reinstall qrobust-keras")
        actual = sha256_file(path)
        if actual != expected:
            raise ZooError(f"zoo model {name!r}: file {path!r} is corrupted or truncated ({os.path.getsize(path):,} "
                           f"bytes, sha256 {actual[:16]}... instead of {expected[:16]}... from its card); reinstall "
                           "qrobust-keras")


def model_path(name: str, root: str = ZOO_DIR, check: bool = True) -> str:
    """Path of the shipped Keras model file (sha256 checked unless ``check=False``)."""
    if check:
        verify(name, root)
    return os.path.join(_entry(name, root), MODEL_FILE)


def tflite_path(name: str, root: str = ZOO_DIR, check: bool = True) -> str:
    """Path of the shipped int8 ``.tflite`` file (sha256 checked unless ``check=False``)."""
    if check:
        verify(name, root)
    return os.path.join(_entry(name, root), TFLITE_FILE)


def load(name: str, root: str = ZOO_DIR) -> Any:
    """The zoo model as a compiled Keras model (Adam, sparse categorical cross-entropy, accuracy), after checking
    every file's sha256. Images go in as float32 in [0, 1]; the DS-CNN takes MFCC features (``qrk.data.mfcc``).

    Raises:
        ZooError: unknown name or a corrupted file.
    """
    from qrobust_keras.models.io import load_model

    model = load_model(model_path(name, root), compile=False)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def resolve(text: str, kind: str = "model", root: str = ZOO_DIR) -> str:
    """``"zoo:NAME"`` -> the shipped file's path (``kind`` "model" or "tflite"); any other text is returned as is.
    What lets every ``MODEL`` argument of the ``qrobust`` command name a zoo model."""
    if isinstance(text, str) and text.startswith(PREFIX):
        name = text[len(PREFIX):]
        return tflite_path(name, root) if kind == "tflite" else model_path(name, root)
    return text


def card_markdown(data: dict[str, Any]) -> str:
    """The markdown that ``qrobust zoo show NAME`` prints, rendered from a card dict (see
    :mod:`qrobust_keras.zoo.cards`)."""
    from qrobust_keras.zoo.cards import render_markdown

    return render_markdown(data)
