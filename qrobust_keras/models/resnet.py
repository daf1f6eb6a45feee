"""The MLCommons Tiny image-classification ResNet-8, built from a quantization policy.

Banbury et al., "MLPerf Tiny Benchmark" (NeurIPS 2021 datasets track, arXiv 2106.07597): a 3x3 conv of 16 filters,
three residual stacks of 16, 32, 64 filters (stride 2 in the last two, with a 1x1 convolution on the shortcut),
average pooling and a dense classifier; L2 1e-4, He-normal initialization; 78,666 parameters with 10 classes.
The same layout serves SVHN (Ayaz et al. 2023, arXiv 2304.12829). ``filters`` widens it the way the MLCommons
training script's ``num_filters`` does (stacks of f, 2f, 4f; the published weights are f = 16, the current script
defaults to 26): more capacity for adversarial training (Madry et al. 2018, arXiv 1706.06083) at about (f / 16)**2
times the parameters and MACs.

Layer names (identical for the float and every quantized variant): ``conv_1, bn_1, relu_1``, then per stack ``s`` in
1..3 ``stack{s}_conv_a, stack{s}_bn_a, stack{s}_relu_a, stack{s}_conv_b, stack{s}_bn_b[, stack{s}_shortcut],
stack{s}_add, stack{s}_relu``, then ``pool, flatten, logits, softmax``. When the activation after an add is an
integer ReLU grid (``quantize_add_inputs``), the convolution branches entering it pass through
``stack{s}_branch_q`` (after ``stack{s}_bn_b``) and ``stack{s}_shortcut_q`` (after ``stack{s}_shortcut``).

Example:

>>> import qrobust_keras as qrk
>>> model = qrk.models.resnet8(policy=qrk.quantization.QuantPolicy(kernel="stochastic_ternary", activation="int4"))
>>> model.count_params(), model.get_layer("stack2_conv_a").__class__.__name__
(78666, 'QConv2D')
>>> qrk.models.resnet8(filters=26).count_params()
205306
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qrobust_keras._checks import check_int
from qrobust_keras._keras import keras
from qrobust_keras.models._build import check_input_shape, check_overrides_matched
from qrobust_keras.quantization import QuantPolicy
from qrobust_keras.quantization import layers as qlayers


def resnet8(num_classes: int = 10, input_shape: tuple = (32, 32, 3), policy: Any = "float",
            input_scale: float = 1.0, weight_decay: float = 1e-4, name: str = "resnet8",
            quantize_add_inputs: bool = True, filters: int | tuple = 16) -> keras.Model:
    """Build the MLCommons Tiny ResNet-8.

    Args:
        num_classes: number of output classes (10 for CIFAR-10 and SVHN).
        input_shape: (height, width, channels) of the input images.
        policy: a :class:`~qrobust_keras.quantization.QuantPolicy`, a spec name (``"float"``, ``"int4"``, ...) or a
            policy dict. ``"float"`` builds plain Keras layers.
        input_scale: when not 1, a ``Rescaling(input_scale)`` layer named ``input_scale`` follows the input; the
            official MLCommons weights expect 0-255 pixels, so :func:`load_mlcommons` uses 255 to keep the library's
            [0, 1] input convention.
        weight_decay: L2 factor on every kernel (1e-4 in the reference).
        name: model name.
        quantize_add_inputs: put each convolution branch that enters a residual add on the grid of the quantized
            ReLU after it (:func:`~qrobust_keras.quantization.layers.add_input`), so that the int8 file's ``ADD``
            computes exactly what the model computes. No effect where that activation is float, ternary or binary.
        filters: width of the network: an int ``f`` gives ``conv_1`` and the three stacks ``f, 2f, 4f`` filters
            (the ``num_filters`` of the MLCommons training script); a tuple of three ints sets the stacks one by
            one (``conv_1`` gets the first). 16, the published model, is the only width the official weights
            fit; the current upstream script defaults to 26. Parameters and MACs grow about as ``f**2``.

    Returns:
        A functional ``tf_keras`` model from images to softmax scores; the pre-softmax tensor is layer ``logits``.

    Raises:
        ValueError: for a bad num_classes, input_shape, policy, or overrides that match no layer.
    """
    check_int("num_classes", num_classes, accepted="a positive integer")
    stack_filters = resnet8_filters(filters)
    if not isinstance(quantize_add_inputs, bool):
        raise ValueError(f"quantize_add_inputs must be True or False; got {quantize_add_inputs!r}")
    input_shape = check_input_shape(input_shape)
    policy = QuantPolicy.from_any(policy)
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    conv_kwargs = dict(padding="same", kernel_initializer="he_normal", kernel_regularizer=reg)

    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    if input_scale != 1.0:
        x = keras.layers.Rescaling(float(input_scale), name="input_scale")(x)
    x = qlayers.conv2d(stack_filters[0], 3, strides=1, name="conv_1", policy=policy, **conv_kwargs)(x)
    x = qlayers.batch_norm(name="bn_1", policy=policy)(x)
    x = qlayers.activation(name="relu_1", policy=policy)(x)
    in_filters = stack_filters[0]
    for stack, filters in enumerate(stack_filters, start=1):
        strides = 1 if stack == 1 else 2
        p = f"stack{stack}_"
        y = qlayers.conv2d(filters, 3, strides=strides, name=p + "conv_a", policy=policy, **conv_kwargs)(x)
        y = qlayers.batch_norm(name=p + "bn_a", policy=policy)(y)
        y = qlayers.activation(name=p + "relu_a", policy=policy)(y)
        y = qlayers.conv2d(filters, 3, strides=1, name=p + "conv_b", policy=policy, **conv_kwargs)(y)
        y = qlayers.batch_norm(name=p + "bn_b", policy=policy)(y)
        if quantize_add_inputs:
            y = _on_add_grid(y, p + "branch_q", p + "relu", policy)
        if strides != 1 or filters != in_filters:
            x = qlayers.conv2d(filters, 1, strides=strides, name=p + "shortcut", policy=policy, **conv_kwargs)(x)
            if quantize_add_inputs:
                x = _on_add_grid(x, p + "shortcut_q", p + "relu", policy)
        x = keras.layers.Add(name=p + "add")([x, y])
        x = qlayers.activation(name=p + "relu", policy=policy)(x)
        in_filters = filters
    pool = int(min(x.shape[1], x.shape[2]))
    x = keras.layers.AveragePooling2D(pool_size=pool, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = qlayers.dense(num_classes, name="logits", policy=policy, kernel_initializer="he_normal")(x)
    outputs = keras.layers.Activation("softmax", name="softmax")(x)
    model = keras.Model(inputs, outputs, name=name)
    check_overrides_matched(policy, model)
    return model


def resnet8_filters(filters: int | tuple = 16) -> tuple[int, int, int]:
    """The filters of the three residual stacks for :func:`resnet8`'s ``filters`` argument: ``(f, 2f, 4f)`` for an
    int ``f``, a tuple of three positive ints as it is.

    Raises:
        ValueError: anything else, naming the value.
    """
    if isinstance(filters, (int, np.integer)) and not isinstance(filters, bool) and filters >= 1:
        return int(filters), 2 * int(filters), 4 * int(filters)
    if isinstance(filters, (tuple, list)) and len(filters) == 3 and all(
            isinstance(f, (int, np.integer)) and not isinstance(f, bool) and f >= 1 for f in filters):
        return tuple(int(f) for f in filters)
    raise ValueError(f"filters must be a positive integer f (stacks of f, 2f, 4f filters; 16 is the MLCommons "
                     f"model) or three positive integers, one per stack; got filters={filters!r}")


def _on_add_grid(tensor: Any, name: str, activation_name: str, policy: QuantPolicy) -> Any:
    """``tensor`` through the residual-branch quantizer of ``activation_name``'s grid, or unchanged without one."""
    quantizer = qlayers.add_input(name=name, activation_name=activation_name, policy=policy)
    return tensor if quantizer is None else quantizer(tensor)


# Weighted layers in the creation order of the MLCommons training script (used to map the official weights).
RESNET8_WEIGHT_ORDER = {
    "Conv2D": ["conv_1", "stack1_conv_a", "stack1_conv_b", "stack2_conv_a", "stack2_conv_b", "stack2_shortcut",
               "stack3_conv_a", "stack3_conv_b", "stack3_shortcut"],
    "BatchNormalization": ["bn_1", "stack1_bn_a", "stack1_bn_b", "stack2_bn_a", "stack2_bn_b", "stack3_bn_a",
                           "stack3_bn_b"],
    "Dense": ["logits"],
}
