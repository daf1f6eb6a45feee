"""Step-time overhead of Jacobian regularization on ResNet-8 (float, int4, stochastic_ternary), real CIFAR-10 images.

For each policy it times ``model.fit`` steps at batch 128 for: plain training, JR on the logits ("output"), JR on
every weighted/quantized layer with the fused estimator ("all" fused), and the same with one backward pass per layer
("all" per_layer), all with one projection. Configurations are interleaved in rounds (plain, output, fused,
per_layer, plain, ...) so that load from other processes hits them alike; each number is the median step time over
the timed steps of all rounds (the first steps of each fit, which include tracing, are not timed). Ratios are to plain
training of the same policy measured in the same run.

Goal (issue 4): JR "all" fused <= 2.5x plain and <= 1.1x JR "output".

Usage:
    .venv/bin/python bench/jacobian_overhead.py [--data ../shared/data] [--steps 20] [--rounds 2]
        [--policies float,int4,stochastic_ternary]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import numpy as np

import qrobust_keras as qrk
from qrobust_keras._keras import keras

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {
    "plain": lambda: [],
    "jr_output": lambda: [qrk.JacobianRegularization(0.01, "output", n_proj=1, seed=0)],
    "jr_all_fused": lambda: [qrk.JacobianRegularization(0.01, "all", n_proj=1, estimator="fused", seed=0)],
    "jr_all_per_layer": lambda: [qrk.JacobianRegularization(0.01, "all", n_proj=1, estimator="per_layer", seed=0)],
}


class StepTimer(keras.callbacks.Callback):
    """Wall time of each training batch after the first ``skip`` (tracing, warm-up)."""

    def __init__(self, skip: int):
        super().__init__()
        self.skip, self.times, self._t = skip, [], None

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.skip:
            self.times.append(time.perf_counter() - self._t)


def load_images(data_dir: pathlib.Path, n: int):
    (x, y), _ = qrk.data.load_cifar10(data_dir / "cifar10", source="pickle", verbose=0)
    x = x[:n].astype("float32") / 255.0  # the library's [0, 1] input convention
    return x, y[:n]


def build(policy: str):
    keras.utils.set_random_seed(0)
    model = qrk.models.resnet8(num_classes=10, policy=policy)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("QROBUST_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--policies", default="float,int4,stochastic_ternary")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per fit")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per fit (tracing)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    steps_per_fit = args.steps + args.warmup
    x, y = load_images(pathlib.Path(args.data), steps_per_fit * args.batch_size)
    print(f"ResNet-8, batch {args.batch_size}, {len(x)} real CIFAR-10 training images, {args.steps} timed steps x "
          f"{args.rounds} rounds per configuration; median step time (s) and ratio to plain of the same policy.")
    print("The machine may be shared with other processes: treat differences below ~10% as noise.\n")
    header = f"{'policy':<20}" + "".join(f"{c:>18}" for c in CONFIGS)
    print(header)
    all_ok = True
    for policy in args.policies.split(","):
        models = {name: build(policy) for name in CONFIGS}
        times = {name: [] for name in CONFIGS}
        for _ in range(args.rounds):
            for name, callbacks in CONFIGS.items():
                timer = StepTimer(args.warmup)
                models[name].fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0,
                                 callbacks=callbacks() + [timer])
                times[name].extend(timer.times)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(f"{policy + ' (s/step)':<20}" + "".join(f"{med[c]:>18.4f}" for c in CONFIGS))
        print(f"{policy + ' (x plain)':<20}" + "".join(f"{med[c] / med['plain']:>18.2f}" for c in CONFIGS))
        fused_plain = med["jr_all_fused"] / med["plain"]
        fused_output = med["jr_all_fused"] / med["jr_output"]
        ok = fused_plain <= 2.5 and fused_output <= 1.1
        all_ok &= ok
        print(f"{'':<20}goal fused <= 2.5x plain: {fused_plain:.2f}; fused <= 1.1x output: {fused_output:.2f} -> "
              f"{'met' if ok else 'NOT met'}\n")
        sys.stdout.flush()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
