"""Benchmark: data loading and MFCC front ends, measured side by side in one run.

Measures
  * all 60,000 CIFAR-10 JPEGs (``cifar10-jpeg``): ``load_cifar10(source="images")`` with its default tf.data decoder,
    with ``decoder="pil"`` (Pillow thread pool) and with Pillow on one thread (same pixels, checked);
  * the exact pickle batches through the restricted unpickler;
  * one epoch of the augmented ``image_dataset`` pipeline;
  * MFCC throughput of ``mfcc`` (tf.signal) against ``librosa_mfcc`` on the shared Speech Commands clips;
  * the accuracy of the MLCommons reference DS-CNN on those clips for front-end variants (normalization, FFT
    length, mel-matrix choices), which is how the reference choices were checked.

Run:  python bench/data_loading.py [--data ../shared/data] [--limit N]   (N images per split for a quick run)
Prints wall and CPU seconds and the ratios; the issue's bar is "60,000 JPEGs in under a minute on 2 cores".
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _goals import no_record_flag, record  # noqa: E402

from qrobust_keras._keras import tf  # noqa: E402
from qrobust_keras.data import (  # noqa: E402
    image_dataset, librosa_mfcc, list_image_folder, load_cifar10, load_image_folder, load_speech_commands, mfcc,
)
from qrobust_keras.data.cifar10 import CLASS_NAMES  # noqa: E402


def timed(fn):
    t0, c0 = time.perf_counter(), os.times()
    out = fn()
    c1 = os.times()
    return out, time.perf_counter() - t0, (c1.user - c0.user) + (c1.system - c0.system)


def jpeg_paths(root: pathlib.Path, limit: int | None):
    paths = []
    for split in ("train", "test"):
        p, _, _ = list_image_folder(root / split, CLASS_NAMES)
        paths.append(p if limit is None else p[:: max(1, len(p) // limit)][:limit])
    return paths


def load(root, paths, decoder="tf", workers=None):
    return [load_image_folder(root / s, CLASS_NAMES, paths=p, num_workers=workers, decoder=decoder)[0]
            for s, p in zip(("train", "test"), paths)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    args = parser.parse_args(no_record_flag(None))
    data = pathlib.Path(args.data)
    print(f"cores: {os.cpu_count()}, TF {tf.__version__}")

    root = data / "cifar10-jpeg"
    paths = jpeg_paths(root, args.limit)
    n = sum(len(p) for p in paths)
    rows = []
    if args.limit is None:
        (full, _), wall, cpu = timed(lambda: load_cifar10(root, source="images", verbose=0))
        rows.append(("load_cifar10(source='images') [tf.data]", wall, cpu))
        if n == 60000:
            record("jpeg_60k_seconds", wall, "load_cifar10(source='images'), tf.data decoder")
        first = [full[0], None]
    else:
        first, wall, cpu = timed(lambda: load(root, paths))
        rows.append(("load_image_folder [tf.data]", wall, cpu))
    pil, wall, cpu = timed(lambda: load(root, paths, "pil"))
    rows.append(("load_image_folder(decoder='pil') [threads]", wall, cpu))
    _, wall, cpu = timed(lambda: load(root, paths, "pil", workers=1))
    rows.append(("load_image_folder(decoder='pil') [1 thread]", wall, cpu))
    print(f"\n{n:,} CIFAR-10 JPEGs")
    for name, wall, cpu in rows:
        print(f"  {name:45s} {wall:7.2f} s wall {cpu:7.2f} s CPU  {n / wall:9,.0f} img/s  x{wall / rows[0][1]:5.2f}")
    print(f"  tf.data and Pillow pixels identical on the train split: {np.array_equal(first[0], pil[0])}")

    (train, test), wall, cpu = timed(lambda: load_cifar10(data / "cifar10", source="pickle", verbose=0))
    print(f"\nexact pickles ({len(train[0]) + len(test[0]):,} images, restricted unpickler): {wall:.2f} s wall")

    ds = image_dataset(train[0], train[1], batch_size=128, training=True, seed=0)
    _, wall, cpu = timed(lambda: sum(1 for _ in ds))
    print(f"image_dataset epoch ({len(train[0]):,} images, crop+flip): {wall:.2f} s wall, "
          f"{len(train[0]) / wall:,.0f} img/s")

    waves, labels = load_speech_commands(data / "speech_commands" / "test_set_v0.02", features="waveform")
    mfcc(waves[:8])  # trace once
    _, wall_tf, _ = timed(lambda: mfcc(waves))
    sub = waves[:500]
    librosa_mfcc(sub[:8])
    _, wall_lr, _ = timed(lambda: librosa_mfcc(sub))
    rate_tf, rate_lr = len(waves) / wall_tf, len(sub) / wall_lr
    print(f"\nMFCC: tf.signal {rate_tf:,.0f} clips/s, librosa {rate_lr:,.0f} clips/s (x{rate_tf / rate_lr:.1f})")

    from qrobust_keras._keras import keras

    model = keras.models.load_model(str(data / "models" / "mlcommons" / "kws_ref_model"), compile=False)

    def accuracy(feats):
        return float((model.predict(feats, batch_size=512, verbose=0).argmax(1) == labels).mean())

    variants = [
        ("reference: x/max(x), fft 512, no clipping", dict()),
        ("x/max|x|", dict(normalize="max_abs")),
        ("no normalization (int16/32768)", dict(normalize=None)),
        ("fft_length 480", dict(fft_length=480)),
        ("fft_length 1024", dict(fft_length=1024)),
        ("mel 0-8000 Hz", dict(lower_edge_hertz=0.0, upper_edge_hertz=8000.0)),
        ("log(mel + 1e-3)", dict(log_offset=1e-3)),
    ]
    print("\nreference DS-CNN accuracy on the shared test clips, by front end:")
    for name, kwargs in variants:
        print(f"  {name:45s} {accuracy(mfcc(waves, **kwargs)):.4f}")
    clipped = np.clip(waves / waves.max(axis=1, keepdims=True), -1, 1)
    print(f"  {'x/max(x) then clip to [-1, 1] (training path)':45s} {accuracy(mfcc(clipped, normalize=None)):.4f}")
    print(f"  {'librosa_mfcc (documented incompatible)':45s} {accuracy(librosa_mfcc(waves)):.4f}")


if __name__ == "__main__":
    main()
