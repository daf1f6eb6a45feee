"""Train a robust quantized ResNet-8 on SVHN (the recipe of Ayaz et al. 2023 for SVHN: same ResNet-8, no flips).

    python examples/train_svhn_robust.py --data-dir /data/svhn --recipe stq_jr --epochs 30
    python examples/train_svhn_robust.py --data-dir /data/svhn --quick
    python examples/train_svhn_robust.py --quick --synthetic     # no SVHN copy: a generated stand-in task

``--data-dir`` holds ``train_32x32.mat`` and ``test_32x32.mat`` (http://ufldl.stanford.edu/housenumbers/). Without
them the script stops with a message, unless ``--synthetic`` asks for a generated image task (labelled SYNTHETIC in
the output; its numbers say nothing about SVHN).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import qrobust_keras as qrk
from qrobust_keras.demo import synthetic_images
from qrobust_keras.recipes import RECIPES, fit_recipe, get_recipe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder with train_32x32.mat and test_32x32.mat")
    p.add_argument("--recipe", default="stq_jr", choices=RECIPES)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", default="runs/svhn_robust")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--synthetic", action="store_true", help="use a generated stand-in task when SVHN is missing")
    args = p.parse_args(argv)

    tag = ""
    try:
        if args.data_dir is None:
            raise qrk.data.DataNotFoundError("no --data-dir given")
        (x_train, y_train), (x_test, y_test) = qrk.data.load_svhn(args.data_dir)
    except qrk.data.DataNotFoundError as exc:
        if not args.synthetic:
            print(f"SVHN not found: {exc}. Put train_32x32.mat and test_32x32.mat in --data-dir, or pass "
                  "--synthetic to run on a generated stand-in task.", file=sys.stderr)
            return 2
        print(f"SVHN not found ({exc}); using a GENERATED stand-in task (SYNTHETIC)", file=sys.stderr)
        x, y = synthetic_images(1200, seed=1)
        (x_train, y_train), (x_test, y_test) = (x[:1000], y[:1000]), (x[1000:], y[1000:])
        tag = " [SYNTHETIC]"

    n_train, epochs, n_eval, steps = None, args.epochs, 500, 20
    if args.quick:
        n_train, epochs, n_eval, steps = 256, 1, 32, 3
    if n_train:
        x_train, y_train = x_train[:n_train], y_train[:n_train]
    recipe = get_recipe(args.recipe, dataset="svhn", epochs=epochs)   # no horizontal flips for digits
    model = fit_recipe(recipe, (x_train, y_train), (x_test[:1000], y_test[:1000]), args.out, verbose=2)

    x, y = x_test[:n_eval].astype(np.float32) / 255.0, y_test[:n_eval]
    report_clean = np.mean(model.predict(x, verbose=0).argmax(1) == y)
    print(f"clean accuracy{tag}: {100 * report_clean:.1f}% on {len(x)} test images")
    for eps in (2 / 255, 8 / 255):
        x_adv = qrk.attacks.pgd(model, x, y, eps=eps, steps=steps)
        acc = np.mean(model.predict(x_adv, verbose=0).argmax(1) == y)
        print(f"PGD-{steps} eps {round(eps * 255)}/255{tag}: {100 * acc:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
