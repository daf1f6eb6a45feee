"""Training throughput of the int4 ResNet-8: adversarial training (PGD-3 and N-FGSM) against plain QAT, in one run.

Every configuration is the ``int4_at`` recipe's model and callbacks, built by the library
(:func:`qrobust_keras.recipes.build_recipe`), at the recipe's batch of 128 real CIFAR-10 training images:

* ``qat``: plain quantization-aware training of the same model (``at_eps=0``);
* ``pgd3_half``: the recipe as shipped, PGD-3 on half of every batch, crafted against the training-mode network;
* ``nfgsm_half`` / ``nfgsm_full``: single-step N-FGSM (de Jorge et al. 2022, arXiv 2202.01181) on half / all of
  every batch.

Each configuration gets its own model and the exact train function ``model.fit`` runs. After tracing, they take
steps in strict alternation so that load from other processes hits them alike; each number is the median step time.

Why PGD-3 on half a batch should cost about 2.5x a plain step: a plain step is a forward and a backward pass (about
3 forward-pass units); each PGD step on half the batch is a forward and a backward to the input (about 1.5 units),
so 3 steps add 4.5 units: 7.5 / 3 = 2.5. N-FGSM on half the batch adds one such step (1.5 units, ~1.5x), on the
whole batch 3 units (~2x). Goal: PGD-3 on half <= 2.75x plain (the 2.5x model plus 10%).

Usage:
    .venv/bin/python bench/training_speed.py [--data ../shared/data] [--steps 30] [--eps 8/255]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import qrobust_keras as qrk
from qrobust_keras._keras import keras, tf
from qrobust_keras.cli import parse_eps
from qrobust_keras.recipes import build_recipe, get_recipe

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _goals import no_record_flag, record  # noqa: E402

CONFIGS = {
    "qat": dict(at_eps=0.0),
    "pgd3_half": dict(),
    "nfgsm_half": dict(at_method="nfgsm"),
    "nfgsm_full": dict(at_method="nfgsm", at_ratio=1.0),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("QROBUST_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration (tracing)")
    parser.add_argument("--eps", type=parse_eps, default=8 / 255, help="adversarial budget (default 8/255)")
    args = parser.parse_args(no_record_flag(argv))

    (x, y), _ = qrk.data.load_cifar10(pathlib.Path(args.data) / "cifar10", source="pickle", verbose=0)
    batch = get_recipe("int4_at").batch_size
    x, y = x[:8 * batch].astype("float32") / 255.0, y[:8 * batch]
    runs = {}
    for name, overrides in CONFIGS.items():
        keras.utils.set_random_seed(0)
        recipe = get_recipe("int4_at", **({"at_eps": args.eps} | overrides))
        model, callbacks = build_recipe(recipe)
        cbs = keras.callbacks.CallbackList(callbacks, model=model)
        cbs.on_train_begin()
        cbs.on_epoch_begin(0)
        fn = model.make_train_function()  # the function fit calls once per step (with the hooks installed)
        it = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat())
        runs[name] = (fn, it)
    times = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for step in range(args.warmup + args.steps):
        for name, (fn, it) in runs.items():
            t, c = time.perf_counter(), time.process_time()
            float(fn(it)["loss"])
            if step >= args.warmup:  # the first steps trace the function
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    wall = {n: statistics.median(t) for n, t in times.items()}
    proc = {n: statistics.median(t) for n, t in cpu.items()}
    load = os.getloadavg()[0]
    print(f"int4 ResNet-8 (int4_at recipe), batch {batch}, eps {args.eps:.4f}, real CIFAR-10 training images, "
          f"{args.steps} timed steps per configuration in strict alternation (load {load:.1f} on "
          f"{os.cpu_count()} CPUs).\n")
    print(f"{'configuration':<14}{'wall s/step':>12}{'img/s':>9}{'x qat':>8}{'CPU s/step':>12}{'CPU x qat':>10}")
    for name in runs:
        print(f"{name:<14}{wall[name]:>12.3f}{batch / wall[name]:>9.1f}{wall[name] / wall['qat']:>8.2f}"
              f"{proc[name]:>12.3f}{proc[name] / proc['qat']:>10.2f}")
    ratio = wall["pgd3_half"] / wall["qat"]
    print(f"\nPGD-3 on half of each batch / plain QAT: {record('at_pgd3_vs_qat', ratio, 'int4 ResNet-8')}; "
          f"N-FGSM on the whole batch / PGD-3 on half: "
          f"{wall['nfgsm_full'] / wall['pgd3_half']:.2f}")
    return 0 if ratio <= 2.75 else 1


if __name__ == "__main__":
    sys.exit(main())
