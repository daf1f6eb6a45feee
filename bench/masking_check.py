"""A short side-by-side masking check of CIFAR-10 models: APGD-CE-100, then Square-5000 on what it left.

When Square (which never computes a gradient) breaks many points that APGD-CE left, the gradient of the model
misleads the gradient attacks: the model masks (Athalye et al. 2018, arXiv 1802.00420; Croce & Hein 2020, arXiv
2003.01690). This is the check that found the int4-ReLU masking of the zoo's DS-CNN (session 43) and ResNet-8
(session 44; docs/reproduction.md): the same two attacks, cascaded, on the first ``n`` exact test images in file
order, for every model given, in one run. It is a short check, not the standard suite (no APGD-T, FAB-T or Square
restarts): the standard suite normally ends at or below its worst case here.

Usage:
    .venv/bin/python bench/masking_check.py MODEL [MODEL ...] [--cifar10 ../shared/data/cifar10] [--n 256]
        [--eps 2/255]

MODEL is a Keras file or ``zoo:NAME``. Prints one JSON line per model: clean accuracy, APGD-CE, worst case, and the
points Square broke past APGD-CE.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="Keras model files or zoo:NAME")
    p.add_argument("--cifar10", default=str(REPO.parent / "shared" / "data" / "cifar10"),
                   help="CIFAR-10 python batches (the exact test images)")
    p.add_argument("--n", type=int, default=256, help="first n exact test images (default 256)")
    p.add_argument("--eps", default="2/255", help="L-inf budget (default 2/255)")
    args = p.parse_args(argv)

    from qrobust_keras import zoo
    from qrobust_keras._checks import parse_eps_list
    from qrobust_keras.evaluation import evaluate_robustness
    from qrobust_keras.models import load_model
    from qrobust_keras.zoo.eval_sets import load_eval_set

    if args.n < 1:
        p.error(f"--n must be >= 1; got {args.n}")
    try:
        eps = parse_eps_list(args.eps)
        x, y = load_eval_set("cifar10", args.cifar10).data
    except (ValueError, OSError) as exc:  # a bad budget, or no CIFAR-10 batches in --cifar10
        p.error(str(exc))
    x, y = x[:args.n], y[:args.n]
    for path in args.models:
        model = zoo.load(path[len("zoo:"):]) if path.startswith("zoo:") else load_model(path)
        start = time.perf_counter()
        r = evaluate_robustness(model, x, y, attacks=["apgd-ce", "square"], eps=eps, cascade=True, verbose=0,
                                attack_kwargs={"apgd-ce": {"steps": 100}, "square": {"queries": 5000}})
        apgd = r.accuracy["apgd-ce"]
        print(json.dumps({"model": path, "n": len(x), "eps": args.eps, "clean": r.clean_accuracy, "apgd_ce": apgd,
                          "worst": r.robust_accuracy,
                          "square_broke_past_apgd": [a - w for a, w in zip(apgd, r.robust_accuracy)],
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
