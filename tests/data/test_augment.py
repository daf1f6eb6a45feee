"""Tests of qrobust_keras/data/augment.py: every augmented image is a padded crop (maybe flipped) of its source."""

import numpy as np
import pytest

from qrobust_keras.data.augment import image_dataset


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n)


def _candidates(image, pad=4):
    """All 81 crops of the zero-padded image and their flips, as float [0, 1]."""
    padded = np.pad(image.astype(np.float32) / 255, [(pad, pad), (pad, pad), (0, 0)])
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy:dy + 32, dx:dx + 32]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop[:, ::-1]
    return out


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_eval_pipeline_is_plain_scaling_in_order():
    x, y = _images()
    xs, ys = _collect(image_dataset(x, y, batch_size=16, training=False))
    assert xs.dtype == np.float32
    np.testing.assert_array_equal(ys, y)
    np.testing.assert_allclose(xs, x / np.float32(255), atol=1e-7)


def test_training_images_are_crops_and_flips_of_their_source():
    x, y = _images()
    xs, ys = _collect(image_dataset(x, y, batch_size=16, training=True, seed=1))
    assert xs.dtype == np.float32 and xs.min() >= 0 and xs.max() <= 1
    assert sorted(ys.tolist()) == sorted(y.tolist())
    assert not np.array_equal(ys, y)  # shuffled
    seen = []
    for img, label in zip(xs, ys):  # labels are unique here, so each names its source image
        cands = _candidates(x[label])
        keys = list(cands)
        dist = np.abs(np.stack([cands[k] for k in keys]) - img).max(axis=(1, 2, 3))
        assert dist.min() < 1e-6, "augmented image is not a 4-pixel padded crop / flip of its source"
        seen.append(keys[int(dist.argmin())])
    flips = np.mean([k[2] for k in seen])
    offsets = {(k[0], k[1]) for k in seen}
    assert 0.2 < flips < 0.8 and len(offsets) > 15


def test_same_seed_same_batches_new_epoch_new_crops():
    x, y = _images()
    a1 = _collect(image_dataset(x, y, batch_size=8, seed=5))
    ds = image_dataset(x, y, batch_size=8, seed=5)
    b1, b2 = _collect(ds), _collect(ds)
    np.testing.assert_array_equal(a1[0], b1[0])
    assert not np.array_equal(b1[0], b2[0])
    c1 = _collect(image_dataset(x, y, batch_size=8, seed=6))
    assert not np.array_equal(a1[0], c1[0])


def test_options_and_errors():
    x, y = _images(10)
    xs, _ = _collect(image_dataset(x, y, batch_size=4, pad=0, flip=False, shuffle=False, seed=0))
    np.testing.assert_allclose(xs, x / np.float32(255), atol=1e-7)  # nothing to augment
    batches = list(image_dataset(x, y, batch_size=4, drop_remainder=True))
    assert [len(b[0]) for b in batches] == [4, 4]
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\]"):
        image_dataset(x.astype(np.float32), y)
    with pytest.raises(ValueError, match="same length"):
        image_dataset(x, y[:3])
    with pytest.raises(ValueError, match=r"shape \(n, h, w, c\)"):
        image_dataset(x[..., 0], y)
