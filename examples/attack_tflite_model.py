"""Attack any .tflite classifier file itself with black-box attacks (the deployed int8 model, not its Keras twin).

    python examples/attack_tflite_model.py model_int8.tflite --data-dir ../shared/data/cifar10 --eps 2/255,8/255
    python examples/attack_tflite_model.py model.tflite --npz inputs.npz --quick    # arrays x (n, ...) in [0, 1], y

The file runs through ``qrk.export.TFLiteModel`` (batched LiteRT interpreter, float inputs in [0, 1] quantized by
the file's own input scale). Square (score-based, Andriushchenko et al. 2020, arXiv 1912.00049) needs only the
scores; with ``--tflm`` clean accuracy is also checked in the TensorFlow Lite Micro interpreter, as on the device.
"""

from __future__ import annotations

import argparse

import numpy as np

import qrobust_keras as qrk
from qrobust_keras.attacks.square import square
from qrobust_keras.cli import parse_eps_list
from qrobust_keras.evaluation import format_eps as eps_label


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=".tflite file")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (test images are attacked)")
    p.add_argument("--npz", default=None, help="or an .npz with arrays x (inputs in [0, 1]) and y (int labels)")
    p.add_argument("--eps", default="2/255,8/255", help="comma-separated L-inf budgets (8/255 or 0.03)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("-n", type=int, default=200, help="samples to attack")
    p.add_argument("--tflm", action="store_true", help="also check clean accuracy in TFLite Micro")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = p.parse_args(argv)

    n, queries = (16, 20) if args.quick else (args.n, args.queries)
    if args.npz:
        arrays = np.load(args.npz)
        x, y = arrays["x"].astype(np.float32), arrays["y"].astype(np.int64)
    else:
        _, (x, y) = qrk.data.load_cifar10(args.data_dir)
        x = x.astype(np.float32) / 255.0
    x, y = x[:n], y[:n]
    tfl = qrk.export.TFLiteModel(args.model)
    print(f"{args.model}: input {tfl.input_dtype} {tfl.input_shape}, output {tfl.output_dtype}, "
          f"{tfl.num_classes} classes")
    ok = tfl.predict(x).argmax(1) == y
    print(f"clean accuracy: {100 * ok.mean():.1f}% on {len(x)} samples")
    if args.tflm:
        micro = qrk.export.TFLiteModel(args.model, runtime="tflm")
        k = min(len(x), 16 if args.quick else 100)
        agree = np.mean(micro.predict(x[:k]).argmax(1) == tfl.predict(x[:k]).argmax(1))
        print(f"TFLite Micro agrees with LiteRT on {100 * agree:.1f}% of {k} samples")
    for eps in parse_eps_list(args.eps):
        x_adv, info = square(tfl, x, y, eps=eps, queries=queries, verbose=0, return_info=True)
        assert np.abs(x_adv - x).max() <= eps + 1e-6
        robust = ok & (tfl.predict(x_adv).argmax(1) == y)
        print(f"Square eps {eps_label(eps)}: {100 * robust.mean():.1f}% robust, mean queries "
              f"{np.mean(info.queries):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
