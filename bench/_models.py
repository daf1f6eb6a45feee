"""The model the attack benchmarks share: an int4 QKeras ResNet-8 from the MLCommons float weights (or random init).

Imported by ``bench/attack_speed.py`` and ``bench/square_speed.py`` so neither imports the other.
"""

from __future__ import annotations

import pathlib

import numpy as np

import qrobust_keras as qrk
from qrobust_keras._keras import keras
from qrobust_keras.models import copy_weights_by_name


def int4_resnet8(data: pathlib.Path, x_train: np.ndarray, y_train: np.ndarray, epochs: int) -> keras.Model:
    """The int4 ResNet-8, briefly fine-tuned with QAT (``epochs``) on ``x_train``; speed does not depend on it."""
    keras.utils.set_random_seed(0)
    ref_path = data / "models" / "mlcommons" / "pretrainedResnet.h5"
    source = "random init"
    if ref_path.exists():
        # Same layer names as the float reference; Rescaling(255) in front keeps our [0, 1] input convention.
        model = qrk.models.resnet8(policy="int4", input_scale=255.0)
        ref = qrk.models.load_mlcommons("resnet8", ref_path)
        copied = len(copy_weights_by_name(ref, model))
        source = f"MLCommons float weights ({copied} layers copied)"
    else:
        model = qrk.models.resnet8(policy="int4")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    if epochs:
        model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    print(f"model: ResNet-8 int4 (QKeras), init from {source}, {epochs} epoch(s) of QAT on {len(x_train)} images")
    return model
