"""A ``tf.data`` pipeline for image training: shuffle, random crop with zero padding, horizontal flip, [0, 1] floats.

The augmentation is vectorized per batch with stateless random ops seeded from ``tf.data.Dataset.random``, so a
given ``seed`` gives the same sequence of batches in every run, with fresh crops and flips each epoch.

Example (ten random images stand in for ``load_cifar10(...)[0]``):

>>> import numpy as np
>>> from qrobust_keras.data import image_dataset
>>> x_train = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
>>> y_train = np.arange(10)
>>> ds = image_dataset(x_train, y_train, batch_size=4, training=True, seed=0)
>>> images, labels = next(iter(ds))
>>> images.shape, images.dtype.name, labels.dtype.name
(TensorShape([4, 32, 32, 3]), 'float32', 'int64')
>>> [len(labels) for _, labels in ds]                              # the last batch is partial
[4, 4, 2]
>>> again, _ = next(iter(image_dataset(x_train, y_train, batch_size=4, training=True, seed=0)))
>>> bool(np.array_equal(images, again))                            # same seed, same batches
True
>>> # model.fit(ds, epochs=10)
"""

from __future__ import annotations

import numpy as np

from qrobust_keras._keras import tf

__all__ = ["image_dataset", "random_crop_flip"]


def random_crop_flip(images: tf.Tensor, seed: tf.Tensor, pad: int = 4, flip: bool = True) -> tf.Tensor:
    """Per-image random crop of the zero-padded batch back to its size, and random left-right flip.

    Args:
        images: float ``(batch, h, w, c)``.
        seed: int tensor of shape ``(2,)`` for the stateless random ops.
        pad: zero padding on each side in pixels (4 for CIFAR-10: offsets in 0..8).
        flip: flip each image with probability 1/2.
    """
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    if pad > 0:
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        dy = tf.random.stateless_uniform([n], seeds[0], 0, 2 * pad + 1, dtype=tf.int32)
        dx = tf.random.stateless_uniform([n], seeds[1], 0, 2 * pad + 1, dtype=tf.int32)
        rows = dy[:, None] + tf.range(h)[None, :]
        cols = dx[:, None] + tf.range(w)[None, :]
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        images = tf.gather(images, cols, axis=2, batch_dims=1)
    if flip:
        do_flip = tf.random.stateless_uniform([n], seeds[2]) < 0.5
        images = tf.where(do_flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    return images


def image_dataset(x, y, *, batch_size: int = 128, training: bool = True, pad: int = 4, flip: bool = True,
                  shuffle: bool | None = None, seed: int = 0, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of ``(float32 images in [0, 1], int64 labels)`` for ``model.fit`` / evaluation.

    Args:
        x: uint8 images ``(n, h, w, c)`` (divided by 255) or floats already in [0, 1].
        y: integer labels ``(n,)`` (or one-hot ``(n, k)``, passed through).
        batch_size: images per batch.
        training: apply the augmentation (random crop after ``pad`` pixels of zero padding, horizontal flip) and
            shuffle; ``False`` gives the plain images in order.
        pad: padding in pixels for the random crop (0 disables cropping).
        flip: random horizontal flips (training only).
        shuffle: override shuffling (default: ``training``).
        seed: seeds the shuffle order and the augmentation; epochs differ, runs repeat.
        drop_remainder: drop the last incomplete batch.

    Returns:
        A ``tf.data.Dataset``.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be images of shape (n, h, w, c); got shape={x.shape}")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length; got {len(x)} and {len(y)}")
    if int(batch_size) <= 0:
        raise ValueError(f"batch_size must be a positive integer; got batch_size={batch_size!r}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0; got pad={pad}")
    if x.dtype.kind == "f" and x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"float images must be in [0, 1]; got values in [{x.min()}, {x.max()}] (uint8 images are "
                         "scaled by the pipeline)")
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    y = np.asarray(y)
    if y.ndim == 1:
        y = y.astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training if shuffle is None else shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)

    def to_float(images, labels):
        return tf.cast(images, tf.float32) * scale, labels

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if training and (pad > 0 or flip):
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: (random_crop_flip(batch[0], s, pad, flip), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
