"""Load the official MLCommons Tiny reference weights into the library's own ResNet-8 / DS-CNN builders.

The reference files (MLCommons Tiny v1.x, Apache-2.0) are not shipped with the library; point ``path`` at them:
``pretrainedResnet.h5`` (image classification, trained on raw 0-255 pixels) and ``kws_ref_model/`` (keyword
spotting SavedModel). The ResNet-8 gets a ``Rescaling(255)`` layer so it takes [0, 1] images like every model of the
library. After copying, the loader checks on random inputs that our model reproduces the official one.

Example:

>>> import qrobust_keras as qrk
>>> model = qrk.models.load_mlcommons("resnet8", "../shared/data/models/mlcommons")
>>> model.get_layer("input_scale").scale
255.0
"""

from __future__ import annotations

import os
import re

import numpy as np

from qrobust_keras._keras import keras
from qrobust_keras.models.ds_cnn import DS_CNN_WEIGHT_ORDER, ds_cnn
from qrobust_keras.models.resnet import RESNET8_WEIGHT_ORDER, resnet8

_FILES = {"resnet8": "pretrainedResnet.h5", "ds_cnn": "kws_ref_model"}
_ALIASES = {"resnet8": "resnet8", "resnet": "resnet8", "ic": "resnet8", "ds_cnn": "ds_cnn", "dscnn": "ds_cnn",
            "kws": "ds_cnn"}


def _suffix_index(layer_name: str) -> int:
    match = re.search(r"_(\d+)$", layer_name)
    return int(match.group(1)) if match else 0


def _official_path(name: str, path: str | os.PathLike | None) -> str:
    if path is None:
        path = os.environ.get("QROBUST_MLCOMMONS_DIR")
        if not path:
            raise ValueError(f"path is required: the folder holding {_FILES[name]!r} from MLCommons Tiny "
                             "(training/image_classification/trained_models and training/keyword_spotting/"
                             "trained_models of github.com/mlcommons/tiny), or the file itself; or set "
                             "QROBUST_MLCOMMONS_DIR")
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, _FILES[name])):
        path = os.path.join(path, _FILES[name])
    is_saved_model = os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb"))
    if not os.path.exists(path) or (os.path.isdir(path) and not is_saved_model):
        raise FileNotFoundError(f"MLCommons {name} weights not found at path={path!r}; expected the file/folder "
                                f"{_FILES[name]!r} or a folder containing it")
    return path


def load_mlcommons(name: str, path: str | os.PathLike | None = None) -> keras.Model:
    """Build the float reference model with our builder and load the official MLCommons Tiny weights.

    Args:
        name: ``"resnet8"`` (aliases ``"ic"``, ``"resnet"``) or ``"ds_cnn"`` (aliases ``"kws"``, ``"dscnn"``).
        path: the official file/SavedModel folder, or a folder containing it; ``None`` reads
            ``QROBUST_MLCOMMONS_DIR``.

    Returns:
        A float model with our layer names; ResNet-8 takes [0, 1] images (a ``Rescaling(255)`` layer restores the
        0-255 range its weights expect); DS-CNN takes 49x10x1 MFCC features.

    Raises:
        ValueError: unknown name or missing path; FileNotFoundError: nothing at the path; RuntimeError: the file's
        layers or outputs do not match the reference architecture.
    """
    key = _ALIASES.get(str(name).lower())
    if key is None:
        raise ValueError(f"name must be one of {sorted(_ALIASES)}; got name={name!r}")
    source_path = _official_path(key, path)
    official = keras.models.load_model(source_path, compile=False)
    if key == "resnet8":
        model, order, scale = resnet8(policy="float", input_scale=255.0, name="mlcommons_resnet8"), \
            RESNET8_WEIGHT_ORDER, 255.0
    else:
        model, order, scale = ds_cnn(policy="float", name="mlcommons_ds_cnn"), DS_CNN_WEIGHT_ORDER, 1.0
    by_type: dict[str, list] = {}
    for layer in official.layers:
        if layer.weights:
            by_type.setdefault(type(layer).__name__, []).append(layer)
    for layer_type, ours in order.items():
        theirs = sorted(by_type.pop(layer_type, []), key=lambda layer: _suffix_index(layer.name))
        if len(theirs) != len(ours):
            raise RuntimeError(f"{source_path}: expected {len(ours)} {layer_type} layers, found {len(theirs)}")
        for our_name, their_layer in zip(ours, theirs):
            target = model.get_layer(our_name)
            weights = their_layer.get_weights()
            if [w.shape for w in weights] != [tuple(w.shape) for w in target.weights]:
                raise RuntimeError(f"{source_path}: layer {their_layer.name} has weight shapes "
                                   f"{[w.shape for w in weights]}, ours {our_name} needs "
                                   f"{[tuple(w.shape) for w in target.weights]}")
            target.set_weights(weights)
    if by_type:
        raise RuntimeError(f"{source_path}: unexpected weighted layers {sorted(by_type)}")
    probe = np.random.default_rng(0).uniform(0, 1, size=(4, *model.input_shape[1:])).astype(np.float32)
    expected = official(probe * scale, training=False).numpy()
    got = model(probe, training=False).numpy()
    if not np.allclose(expected, got, atol=1e-5):
        raise RuntimeError(f"{source_path}: our {key} does not reproduce the official outputs (max difference "
                           f"{np.abs(expected - got).max():.3g})")
    return model


__all__ = ["load_mlcommons"]
