"""Step-time overhead of Jacobian regularization on ResNet-8 (float, int4, stochastic_ternary), real CIFAR-10 images.

For each policy it times training steps at batch 128 for: plain training, JR on the logits ("output"), JR on every
weighted/quantized layer with the fused estimator ("all" fused), and the same with one backward pass per layer
("all" per_layer), all with one projection, and fused "all" with lazy regularization every second step ("every=2":
2 lambda on even steps, nothing on odd ones; the same penalty on average). Each configuration gets its own model and
the exact train function ``model.fit`` runs (the callback is attached as in ``fit``); after tracing, the
configurations take steps in strict alternation (plain, output, fused, ...) so that load from other processes hits
them alike. Each number is the median, over pairs of consecutive steps, of the pair's mean step time. Ratios are to
plain training of the same policy measured in the same run.

"jr_all_fd" is JR on every layer with the finite-difference estimator (one extra forward pass, no double backprop);
it refuses models with stochastic quantizers, so the stochastic-ternary row has no such column.

Goals: JR "all" fused <= 2.5x plain and <= 1.1x JR "output" (issue 4); JR "all" finite_difference <= 2.2x plain
(issue 23).

Usage:
    .venv/bin/python bench/jacobian_overhead.py [--data ../shared/data] [--steps 30]
        [--policies float,int4,stochastic_ternary]
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

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _goals import no_record_flag, record  # noqa: E402
CONFIGS = {
    "plain": lambda: [],
    "jr_output": lambda: [qrk.JacobianRegularization(0.01, "output", n_proj=1, seed=0)],
    "jr_all_fused": lambda: [qrk.JacobianRegularization(0.01, "all", n_proj=1, estimator="fused", seed=0)],
    "jr_all_per_layer": lambda: [qrk.JacobianRegularization(0.01, "all", n_proj=1, estimator="per_layer", seed=0)],
    "jr_all_fused_every2": lambda: [qrk.JacobianRegularization(0.01, "all", n_proj=1, every=2, seed=0)],
    "jr_all_fd": lambda: [qrk.JacobianRegularization(0.01, "all", n_proj=1, estimator="finite_difference", seed=0)],
}


def load_images(data_dir: pathlib.Path, n: int):
    (x, y), _ = qrk.data.load_cifar10(data_dir / "cifar10", source="pickle", verbose=0)
    x = x[:n].astype("float32") / 255.0  # the library's [0, 1] input convention
    return x, y[:n]


def build(policy: str):
    keras.utils.set_random_seed(0)
    model = qrk.models.resnet8(num_classes=10, policy=policy)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _median_of_pairs(times: list) -> float:
    """Median over consecutive (even, odd) step pairs of their mean: fair to every=2, which alternates slow/fast."""
    return statistics.median((a + b) / 2 for a, b in zip(times[0::2], times[1::2]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("QROBUST_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--policies", default="float,int4,stochastic_ternary")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps per configuration (tracing; even)")
    args = parser.parse_args(no_record_flag(argv))
    if args.warmup % 2 or args.steps % 2:
        parser.error("--warmup and --steps must be even (steps are timed in pairs)")

    x, y = load_images(pathlib.Path(args.data), 8 * args.batch_size)
    print(f"ResNet-8, batch {args.batch_size}, real CIFAR-10 training images, {args.steps} timed steps per "
          "configuration in strict alternation; median over step pairs of the step time (s), and ratio to plain.")
    print("Wall time is what a user waits; CPU time (all threads of this process) is less sensitive to other load.")
    print("The machine may be shared with other processes: treat differences below ~10% as noise.\n")
    print(f"{'policy':<20}" + "".join(f"{c:>20}" for c in CONFIGS))
    all_ok = True
    for policy in args.policies.split(","):
        fns = {}
        for name, callbacks in CONFIGS.items():
            model = build(policy)
            cbs = keras.callbacks.CallbackList(callbacks(), model=model)
            try:
                cbs.on_train_begin()
            except ValueError as err:   # finite differences refuse stochastic quantizers
                print(f"{policy}: {name} refused ({str(err)[:90]}...)")
                continue
            cbs.on_epoch_begin(0)
            fn = model.make_train_function()  # the function fit calls once per step (with the hooks installed)
            it = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size, drop_remainder=True).repeat())
            fns[name] = (fn, it, cbs)
        configs = list(fns)
        times = {name: [] for name in configs}
        cpu = {name: [] for name in configs}
        for step in range(args.warmup + args.steps):
            for name, (fn, it, cbs) in fns.items():
                t, c = time.perf_counter(), time.process_time()
                cbs.on_train_batch_begin(step)  # as fit does (JR picks the batches that log jr/<layer>)
                float(fn(it)["loss"])
                if step >= args.warmup:  # the first steps trace the function
                    times[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
        med = {name: _median_of_pairs(t) for name, t in times.items()}
        med_cpu = {name: _median_of_pairs(t) for name, t in cpu.items()}
        row = lambda label, values: print(f"{policy + label:<20}" + "".join(  # noqa: E731
            f"{values[c]:>20.4f}" if c in values else f"{'-':>20}" for c in CONFIGS))
        row(" wall s/step", med)
        row(" wall x plain", {c: med[c] / med["plain"] for c in med})
        row(" CPU s/step", med_cpu)
        row(" CPU x plain", {c: med_cpu[c] / med_cpu["plain"] for c in med_cpu})
        fused_plain = med["jr_all_fused"] / med["plain"]
        fused_output = med["jr_all_fused"] / med["jr_output"]
        ok = fused_plain <= 2.5 and fused_output <= 1.1
        if "jr_all_fd" in med:
            fd_plain = med["jr_all_fd"] / med["plain"]
            print(f"{'':<20}finite_difference / plain: {record('jr_fd_vs_plain', fd_plain, f'{policy} ResNet-8')} "
                  f"(CPU time: "
                  f"{med_cpu['jr_all_fd'] / med_cpu['plain']:.2f})")
            all_ok &= fd_plain <= 2.2
        all_ok &= ok
        record("jr_fused_vs_plain", fused_plain, f"{policy} ResNet-8")
        record("jr_fused_vs_output", fused_output, f"{policy} ResNet-8")
        print(f"{'':<20}goal fused <= 2.5x plain: {fused_plain:.2f}; fused <= 1.1x output: {fused_output:.2f} -> "
              f"{'met' if ok else 'NOT met'} (wall time; CPU time: "
              f"{med_cpu['jr_all_fused'] / med_cpu['plain']:.2f} and "
              f"{med_cpu['jr_all_fused'] / med_cpu['jr_output']:.2f})\n")
        sys.stdout.flush()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
