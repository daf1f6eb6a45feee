"""Train a robust quantized DS-CNN keyword spotter on a speaker-disjoint split, attack it at MFCC and waveform level.

    python examples/train_kws_robust.py --data-dir ../shared/data/speech_commands --recipe stq_jr
    python examples/train_kws_robust.py --data-dir ../shared/data/speech_commands --quick

The clips are split by speaker (70% train / 10% validation / 20% test, ``qrk.data.speaker_disjoint_split``), so no
test speaker is heard in training. The DS-CNN trains on the MLCommons MFCC features (49 x 10); for waveform-level
attacks the trained network is put behind the differentiable ``qrk.data.MFCC`` layer, so PGD and Square perturb the
1-second waveform itself. The MLCommons reference DS-CNN (``--mlcommons-dir``) is evaluated on the same test
speakers for comparison. Budgets: ``--eps-mfcc`` in MFCC units, ``--eps-wave`` in waveform units (full scale 1);
each takes a comma-separated list for a sweep (one line per budget). ``--model`` evaluates a trained model instead
of training one.
"""

from __future__ import annotations

import argparse

import numpy as np

import qrobust_keras as qrk
from qrobust_keras.attacks.square import square
from qrobust_keras.recipes import RECIPES, fit_recipe, get_recipe


def robust_accuracy(model, x, y, eps, clip, steps, queries):
    ok_pgd = model.predict(qrk.attacks.pgd(model, x, y, eps=eps, steps=steps, clip_min=clip[0], clip_max=clip[1]),
                           verbose=0).argmax(1) == y
    x_sq = square(model, x, y, eps=eps, queries=queries, clip_min=clip[0], clip_max=clip[1], verbose=0)
    ok_sq = model.predict(x_sq, verbose=0).argmax(1) == y
    return ok_pgd.mean(), ok_sq.mean(), (ok_pgd & ok_sq).mean()


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers such as 0.1,0.5; got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers such as 0.1,0.5; got {text!r}")
    return values


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="Speech Commands folder (full dataset or the test-set layout)")
    p.add_argument("--mlcommons-dir", default=None, help="folder with the MLCommons kws_ref_model (optional)")
    p.add_argument("--recipe", default="stq_jr", choices=RECIPES)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--at-eps", type=float, default=None,
                   help="adversarial-training budget in MFCC units (default: the recipe's; *_at recipes only)")
    p.add_argument("--eps-mfcc", type=_floats, default=[1.0], help="MFCC-level budget(s), e.g. 0.05,0.1,0.25")
    p.add_argument("--eps-wave", type=_floats, default=[0.005], help="waveform-level budget(s), e.g. 1e-4,5e-4")
    p.add_argument("--model", default=None, help="evaluate this saved model (.h5) instead of training")
    p.add_argument("--out", default="runs/kws_robust")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = p.parse_args(argv)

    feats, labels, paths = qrk.data.load_speech_commands(args.data_dir, split="all", return_paths=True)
    waves = qrk.data.load_speech_commands(args.data_dir, split="all", features="waveform")[0]
    parts = qrk.data.speaker_disjoint_split(paths, validation_fraction=0.1, test_fraction=0.2, seed=0)
    tr, va, te = parts["train"], parts["validation"], parts["test"]
    epochs, n_eval, steps, queries = args.epochs, 300, 20, 1000
    if args.quick:
        tr, epochs, n_eval, steps, queries = tr[:300], 1, 24, 3, 20
    print(f"speaker-disjoint split: {len(parts['train'])} train / {len(va)} validation / {len(te)} test clips")

    if args.at_eps is not None and not args.recipe.endswith("_at"):
        p.error(f"--at-eps applies to the adversarial-training recipes (stq_jr_at, int4_at); got --recipe {args.recipe}")
    recipe = get_recipe(args.recipe, dataset="speech_commands", epochs=epochs, at_eps=args.at_eps)
    if args.model:
        model = qrk.models.load_model(args.model, compile=False)
    else:
        # a recipe that starts from the official weights (int4_at) reads them from --mlcommons-dir when given
        init = f"mlcommons:{args.mlcommons_dir}" if recipe.init_weights == "mlcommons" and args.mlcommons_dir else None
        model = fit_recipe(recipe, (feats[tr], labels[tr]), (feats[va], labels[va]), args.out, verbose=2,
                           init_weights=init)

    te = te[:n_eval]
    x_f, x_w, y = feats[te].astype(np.float32), waves[te].reshape(-1, 125, 128).astype(np.float32), labels[te]
    clip_f = (float(feats[tr].min()), float(feats[tr].max()))
    models = {recipe.name: model}
    if args.mlcommons_dir:
        models["MLCommons reference"] = qrk.models.load_mlcommons("ds_cnn", args.mlcommons_dir)
    for name, m in models.items():
        clean = np.mean(m.predict(x_f, verbose=0).argmax(1) == y)
        wm = qrk.data.waveform_model(m)
        clean_w = np.mean(wm.predict(x_w, verbose=0).argmax(1) == y)
        print(f"{name}: clean {100 * clean:.1f}% (waveform path {100 * clean_w:.1f}%) on {len(y)} test clips")
        for eps in args.eps_mfcc:
            pgd_f, sq_f, worst_f = robust_accuracy(m, x_f, y, eps, clip_f, steps, queries)
            print(f"  {name} | MFCC eps {eps:g}: PGD {100 * pgd_f:.1f}%, Square {100 * sq_f:.1f}%, worst "
                  f"{100 * worst_f:.1f}%")
        for eps in args.eps_wave:
            pgd_w, sq_w, worst_w = robust_accuracy(wm, x_w, y, eps, (-1.0, 1.0), steps, queries)
            print(f"  {name} | waveform eps {eps:g}: PGD {100 * pgd_w:.1f}%, Square {100 * sq_w:.1f}%, worst "
                  f"{100 * worst_w:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
