"""Building a recipe: its model, its compiled optimizer and loss, the callbacks that carry its schedule (learning
rate, Jacobian regularization, adversarial training or TRADES) and its input pipeline.

Example:

>>> from qrobust_keras.recipes import get_recipe
>>> from qrobust_keras.recipes.build import build_recipe, learning_rate
>>> recipe = get_recipe("int4_at", dataset="speech_commands", epochs=4)
>>> model, callbacks = build_recipe(recipe, clip_range=(-1.0, 1.0))
>>> model.input_shape, [type(c).__name__ for c in callbacks]
((None, 49, 10, 1), ['LearningRateScheduler', 'AdversarialTraining'])
>>> [round(learning_rate(recipe)(epoch), 6) for epoch in range(4)]   # cosine decay from 5e-4
[0.0005, 0.000427, 0.00025, 7.3e-05]
>>> # model.fit(train_dataset(recipe, x_train, y_train), epochs=recipe.epochs, callbacks=callbacks)
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from qrobust_keras._keras import keras
from qrobust_keras.recipes.catalog import Recipe

__all__ = ["build_recipe", "build_model", "learning_rate", "jr_layer_weights", "recipe_callbacks", "train_dataset"]


def learning_rate(recipe: Recipe) -> Callable[[int], float]:
    """The recipe's learning rate as a function of the (0-based) epoch; a pure function of the epoch, so a run
    resumed by ``BackupAndRestore`` continues the same schedule."""
    lr0, epochs = float(recipe.learning_rate), int(recipe.epochs)

    def schedule(epoch: int, lr: float | None = None) -> float:
        if recipe.lr_schedule == "exponential":
            return lr0 * recipe.lr_decay ** epoch
        if recipe.lr_schedule == "step":
            return lr0 * recipe.lr_decay ** (epoch // recipe.lr_step)
        if recipe.lr_schedule == "cosine":
            return lr0 * 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
        return lr0

    return schedule


def build_model(recipe: Recipe) -> keras.Model:
    """The recipe's (uncompiled) model: ResNet-8 or DS-CNN with its policy and weight decay."""
    from qrobust_keras.models import ds_cnn, resnet8

    keras.utils.set_random_seed(recipe.seed)
    builder = resnet8 if recipe.model == "resnet8" else ds_cnn
    width = {} if recipe.filters is None else {"filters": recipe.filters}
    model = builder(num_classes=recipe.num_classes, input_shape=tuple(recipe.input_shape),
                    policy=recipe.quant_policy, weight_decay=recipe.weight_decay, name=f"{recipe.model}_{recipe.name}",
                    **width)
    if recipe.bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(recipe.bn_momentum)
    return model


def jr_layer_weights(recipe: Recipe, model: keras.Model) -> dict[str, float]:
    """Per-layer JR lambdas ``{layer name: lambda_l}`` of the recipe for ``model``.

    ``jr_layers="output"``: ``{"logits": lambda}``. ``"activations"``: the logits and every activation layer (QKeras
    ``QActivation`` or a ReLU ``Activation``/``ReLU``; softmax and residual-branch quantizers excluded): the logits
    get ``jr_weight``, hidden layers ``jr_hidden_weight * K / dim(h_l)`` when ``jr_normalize`` (K = number of
    classes; ``dim`` = units per sample), else ``jr_hidden_weight``.
    """
    lam = float(recipe.jr_weight)
    logits = model.get_layer("logits")
    k = int(np.prod(logits.output.shape[1:]))
    weights = {}
    if recipe.jr_layers == "activations":
        for layer in model.layers:
            kind = type(layer).__name__
            # the signed quantized_bits of a residual branch (qlayers.add_input) rounds a convolution output; it is
            # not one of the network's activations
            is_act = (kind == "QActivation" and type(layer.quantizer).__name__ != "quantized_bits") or kind == "ReLU" \
                or (kind == "Activation" and "relu" in str(layer.get_config().get("activation", "")))
            if is_act:
                dim = int(np.prod(layer.output.shape[1:]))
                hidden = float(recipe.jr_hidden_weight)
                weights[layer.name] = hidden * k / dim if recipe.jr_normalize else hidden
    weights["logits"] = lam
    return weights


def recipe_callbacks(recipe: Recipe, model: keras.Model, clip_range: tuple[float, float] = (0.0, 1.0)) -> list:
    """The callbacks carrying the recipe's schedule: learning rate, then JR and adversarial training (PGD, N-FGSM or
    TRADES) when enabled.

    Args:
        recipe: the recipe.
        model: the model being trained (JR layer names are taken from it).
        clip_range: valid input range for adversarial examples ([0, 1] for images; the feature range for MFCC).
    """
    from qrobust_keras.training import TRADES, AdversarialTraining, JacobianRegularization

    callbacks: list = [keras.callbacks.LearningRateScheduler(learning_rate(recipe))]
    if recipe.jr_weight > 0:
        callbacks.append(JacobianRegularization(layers=jr_layer_weights(recipe, model), n_proj=recipe.jr_n_proj,
                                                warmup_epochs=recipe.jr_warmup_epochs, seed=recipe.seed))
    if recipe.at_eps > 0 and recipe.at_method == "trades":
        callbacks.append(TRADES(eps=float(recipe.at_eps), beta=float(recipe.trades_beta), steps=recipe.at_steps,
                                clip_min=float(clip_range[0]), clip_max=float(clip_range[1]), seed=recipe.seed + 1,
                                craft_mode=recipe.at_craft_mode))
    elif recipe.at_eps > 0:
        steps = recipe.at_steps if recipe.at_method == "pgd" else None
        callbacks.append(AdversarialTraining(attack=recipe.at_method, eps=float(recipe.at_eps), steps=steps,
                                             ratio=recipe.at_ratio, clip_min=float(clip_range[0]),
                                             clip_max=float(clip_range[1]), seed=recipe.seed + 1,
                                             craft_mode=recipe.at_craft_mode))
    return callbacks


def build_recipe(recipe: Recipe, clip_range: tuple[float, float] = (0.0, 1.0)) -> tuple[keras.Model, list]:
    """Build the recipe's compiled model and its callbacks.

    Args:
        recipe: a :class:`Recipe` (see :func:`get_recipe`).
        clip_range: valid input range (for adversarial training).

    Returns:
        ``(model, callbacks)``: the model compiled with the recipe's optimizer, sparse categorical cross-entropy and
        accuracy; pass ``callbacks`` to ``model.fit(..., epochs=recipe.epochs)``.
    """
    model = build_model(recipe)
    if recipe.optimizer == "adam":
        optimizer = keras.optimizers.Adam(recipe.learning_rate)
    else:
        optimizer = keras.optimizers.SGD(recipe.learning_rate, momentum=0.9, nesterov=True)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, recipe_callbacks(recipe, model, clip_range)


def train_dataset(recipe: Recipe, x: np.ndarray, y: np.ndarray, training: bool = True):
    """The recipe's input pipeline: images through :func:`qrobust_keras.data.image_dataset` (crop/flip per the
    recipe), features as plain shuffled batches."""
    from qrobust_keras._keras import tf
    from qrobust_keras.data import image_dataset

    if recipe.is_image:
        return image_dataset(x, y, batch_size=recipe.batch_size, training=training, pad=recipe.augment_pad,
                             flip=recipe.augment_flip, seed=recipe.seed)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(x, np.float32), np.asarray(y, np.int64)))
    if training:
        ds = ds.shuffle(len(x), seed=recipe.seed, reshuffle_each_iteration=True)
    return ds.batch(recipe.batch_size).prefetch(tf.data.AUTOTUNE)

