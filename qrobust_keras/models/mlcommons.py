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
from qrobust_keras.models.io import copy_weights_by_name
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


def load_mlcommons(name: str, path: str | os.PathLike | None = None, fold_input_scale: bool = False) -> keras.Model:
    """Build the float reference model with our builder and load the official MLCommons Tiny weights.

    Args:
        name: ``"resnet8"`` (aliases ``"ic"``, ``"resnet"``) or ``"ds_cnn"`` (aliases ``"kws"``, ``"dscnn"``).
        path: the official file/SavedModel folder, or a folder containing it; ``None`` reads
            ``QROBUST_MLCOMMONS_DIR``.
        fold_input_scale: ResNet-8 only: instead of a ``Rescaling(255)`` layer, fold the 0-255 input range into
            ``bn_1`` (:func:`fold_input_scale_into_bn`), so the model has exactly the layers of every library
            ResNet-8 and its weights can start quantization-aware training (``fit_recipe(init_weights=...)``).

    Returns:
        A float model with our layer names; ResNet-8 takes [0, 1] images (a ``Rescaling(255)`` layer restores the
        0-255 range its weights expect, or ``bn_1`` absorbs it); DS-CNN takes 49x10x1 MFCC features.

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
    if fold_input_scale and scale != 1.0:
        model = fold_input_scale_into_bn(model)
        got = model(probe, training=False).numpy()
        if not np.allclose(expected, got, atol=1e-4):
            raise RuntimeError(f"folding the input scale changed the outputs by {np.abs(expected - got).max():.3g}")
    return model


def fold_input_scale_into_bn(model: keras.Model) -> keras.Model:
    """A copy of a float ResNet-8 without its ``input_scale`` layer, the scale folded into ``bn_1``.

    With input scale s, kernel W and bias b, the first convolution computes ``u = W(s x) + b``; without the scale it
    computes ``u' = (u - b) / s + b``. BatchNorm in inference is ``gamma (u - mu) / sqrt(var + eps) + beta``; with
    ``mu' = (mu - b) / s + b``, ``var' = var / s^2`` and ``gamma' = gamma * s * sqrt(var' + eps) / sqrt(var + eps)``
    it gives the same output for ``u'`` as before for ``u``, exactly. The kernel keeps its trained magnitude (scaling
    it by s instead would put a 255x larger kernel under weight decay and freeze it under Adam), and in training
    mode BatchNorm normalizes by batch statistics, which ignore the scale anyway.

    Args:
        model: a float :func:`~qrobust_keras.models.resnet8` with an ``input_scale`` ``Rescaling`` layer.

    Returns:
        A new float ResNet-8 taking [0, 1] images, with the same weights except ``bn_1``'s.

    Raises:
        ValueError: the model has no ``input_scale`` layer.
    """
    try:
        s = float(model.get_layer("input_scale").scale)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no 'input_scale' layer; nothing to fold") from None
    num_classes = int(model.output_shape[-1])
    folded = resnet8(num_classes=num_classes, input_shape=tuple(model.input_shape[1:]), policy="float",
                     name=model.name)
    copy_weights_by_name(model, folded)
    bias = model.get_layer("conv_1").get_weights()[1]
    bn_layer = folded.get_layer("bn_1")
    gamma, beta, mean, var = bn_layer.get_weights()
    eps = bn_layer.epsilon
    new_var = var / s ** 2
    new_gamma = gamma * s * np.sqrt(new_var + eps) / np.sqrt(var + eps)
    bn_layer.set_weights([new_gamma, beta, (mean - bias) / s + bias, new_var])
    return folded


__all__ = ["fold_input_scale_into_bn", "load_mlcommons"]
