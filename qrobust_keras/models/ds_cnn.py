"""The MLCommons Tiny keyword-spotting DS-CNN, built from a quantization policy.

Banbury et al. 2021 (arXiv 2106.07597), after Zhang et al., "Hello Edge" (arXiv 1711.07128): a 10x4 conv of 64
filters with stride 2, four depthwise-separable blocks (3x3 depthwise + BN + ReLU, 1x1 pointwise 64 + BN + ReLU),
dropout, average pooling and a dense classifier over 12 keywords; 24,908 parameters. Input: 49x10x1 MFCC features
(see :func:`qrobust_keras.data.mfcc`).

Layer names (identical for every policy): ``conv_1, bn_1, relu_1, dropout_1``, per block ``b`` in 1..4
``block{b}_dw, block{b}_dw_bn, block{b}_dw_relu, block{b}_pw, block{b}_pw_bn, block{b}_pw_relu``, then
``dropout_2, pool, flatten, logits, softmax``.

Example:

>>> import qrobust_keras as qrk
>>> qrk.models.ds_cnn(policy="int8").count_params()
24908
"""

from __future__ import annotations

from typing import Any

from qrobust_keras._checks import check_int
from qrobust_keras._keras import keras
from qrobust_keras.models._build import check_input_shape, check_overrides_matched
from qrobust_keras.quantization import QuantPolicy
from qrobust_keras.quantization import layers as qlayers

DS_CNN_FILTERS = 64
DS_CNN_BLOCKS = 4


def ds_cnn(num_classes: int = 12, input_shape: tuple = (49, 10, 1), policy: Any = "float",
           weight_decay: float = 1e-4, dropout: tuple[float, float] = (0.2, 0.4), name: str = "ds_cnn",
           filters: int = DS_CNN_FILTERS) -> keras.Model:
    """Build the MLCommons Tiny DS-CNN.

    Args:
        num_classes: number of keywords (12 for the MLCommons label set).
        input_shape: (frames, coefficients, 1) of the MFCC input, (49, 10, 1) in the reference.
        policy: QuantPolicy, spec name or policy dict (``"float"`` = plain Keras layers).
        weight_decay: L2 factor on convolution kernels (1e-4 in the reference).
        dropout: rates of the dropout after the first convolution and before pooling.
        name: model name.
        filters: channels of the first convolution and of every pointwise convolution (64 in the reference, the
            only width the official weights fit).

    Returns:
        A functional ``tf_keras`` model from MFCC features to softmax scores (pre-softmax layer ``logits``).
    """
    check_int("num_classes", num_classes, accepted="a positive integer")
    check_int("filters", filters, accepted="a positive integer")
    input_shape = check_input_shape(input_shape)
    policy = QuantPolicy.from_any(policy)
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None

    inputs = keras.Input(shape=input_shape, name="input")
    x = qlayers.conv2d(filters, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=reg,
                       name="conv_1", policy=policy)(inputs)
    x = qlayers.batch_norm(name="bn_1", policy=policy)(x)
    x = qlayers.activation(name="relu_1", policy=policy)(x)
    x = keras.layers.Dropout(dropout[0], name="dropout_1")(x)
    for block in range(1, DS_CNN_BLOCKS + 1):
        p = f"block{block}_"
        x = qlayers.depthwise_conv2d((3, 3), padding="same", kernel_regularizer=reg, name=p + "dw", policy=policy)(x)
        x = qlayers.batch_norm(name=p + "dw_bn", policy=policy)(x)
        x = qlayers.activation(name=p + "dw_relu", policy=policy)(x)
        x = qlayers.conv2d(filters, (1, 1), padding="same", kernel_regularizer=reg, name=p + "pw",
                           policy=policy)(x)
        x = qlayers.batch_norm(name=p + "pw_bn", policy=policy)(x)
        x = qlayers.activation(name=p + "pw_relu", policy=policy)(x)
    x = keras.layers.Dropout(dropout[1], name="dropout_2")(x)
    x = keras.layers.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])), name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = qlayers.dense(num_classes, name="logits", policy=policy)(x)
    outputs = keras.layers.Activation("softmax", name="softmax")(x)
    model = keras.Model(inputs, outputs, name=name)
    check_overrides_matched(policy, model)
    return model


DS_CNN_WEIGHT_ORDER = {
    "Conv2D": ["conv_1"] + [f"block{b}_pw" for b in range(1, DS_CNN_BLOCKS + 1)],
    "DepthwiseConv2D": [f"block{b}_dw" for b in range(1, DS_CNN_BLOCKS + 1)],
    "BatchNormalization": ["bn_1"] + [f"block{b}_{k}_bn" for b in range(1, DS_CNN_BLOCKS + 1) for k in ("dw", "pw")],
    "Dense": ["logits"],
}
