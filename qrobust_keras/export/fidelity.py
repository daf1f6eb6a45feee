"""compare_runtimes: does an int8 file compute the same in TFLite Micro (the microcontroller) as in LiteRT?

The same int8 file can give different scores in different interpreters: LiteRT's default kernels (XNNPACK and the
optimized builtin kernels) round some intermediate int8/int32 results differently from the reference kernels that
TFLite Micro runs, so a few output codes move and, on samples whose two best scores are within a code or two, the
argmax moves too. This module measures it: per runtime, argmax agreement with TFLite Micro, how many of the
disagreements are top-score ties (the two best int8 output codes equal in either runtime: argmax then depends on
the tie rule, not the kernels), the largest output-code difference, and the throughput.

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> model = qrk.models.resnet8(policy="int4")
>>> x = np.random.default_rng(0).uniform(size=(16, 32, 32, 3)).astype("float32")
>>> _ = qrk.export.export_tflite(model, "/tmp/qrk_fid.tflite", representative_data=x, overwrite=True)
>>> r = qrk.export.compare_runtimes("/tmp/qrk_fid.tflite", x[:4])
>>> r["litert-reference"]["agreement"], r["litert-reference"]["max_code_diff"]
(1.0, 0)
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

__all__ = ["RUNTIME_CHOICES", "compare_runtimes"]

# name -> (TFLiteModel runtime, kernels)
RUNTIME_CHOICES = {"tflm": ("tflm", "default"), "litert": ("litert", "default"),
                   "litert-builtin": ("litert", "builtin"), "litert-reference": ("litert", "reference"),
                   "tflite": ("tflite", "default"), "tflite-reference": ("tflite", "reference")}


def _codes(model: Any, x: np.ndarray) -> np.ndarray:
    q = model.input_grid.quantize(x) if model.input_grid is not None else x
    return np.asarray(model.predict_quantized(q)).astype(np.int32)


def _tied(codes: np.ndarray) -> np.ndarray:
    top2 = np.sort(codes, axis=1)[:, -2:]
    return top2[:, 0] == top2[:, 1]


def compare_runtimes(path: str, x: np.ndarray, y: np.ndarray | None = None,
                     runtimes: Sequence[str] = ("litert", "litert-reference")) -> dict[str, Any]:
    """Run the int8 file at ``path`` in TFLite Micro and in each of ``runtimes`` on the same inputs.

    Args:
        path: an int8 ``.tflite`` file.
        x: float inputs in the model's input range (quantized with the file's own input scale, as on the device).
        y: optional labels (then each runtime's accuracy is reported too).
        runtimes: names from :data:`RUNTIME_CHOICES` besides ``"tflm"``.

    Returns:
        ``{"samples": n, "tflm": {"seconds", "samples_per_second", "accuracy"?}, NAME: {"agreement",
        "disagreements", "tied_disagreements", "agreement_untied", "max_code_diff", "samples_per_second",
        "accuracy"?}}``: agreement is the argmax agreement with TFLite Micro; a disagreement is tied when the two
        best output codes are equal in either runtime; ``agreement_untied`` is the agreement on the other samples.

    Raises:
        ValueError: an unknown runtime name or a float (non-int8) file.
        ImportError: ``tflite-micro`` (or LiteRT for the litert runtimes) not installed.
    """
    from qrobust_keras.export.runner import TFLiteModel

    unknown = [r for r in runtimes if r not in RUNTIME_CHOICES or r == "tflm"]
    if unknown:
        raise ValueError(f"runtimes {unknown} are not known; choose from "
                         f"{[r for r in RUNTIME_CHOICES if r != 'tflm']}")
    x = np.asarray(x, np.float32)
    results: dict[str, Any] = {"samples": int(len(x))}
    outputs = {}
    for name in ("tflm", *runtimes):
        runtime, kernels = RUNTIME_CHOICES[name]
        model = TFLiteModel(path, runtime=runtime, kernels=kernels, require_int8=True)
        start = time.perf_counter()
        outputs[name] = _codes(model, x)
        seconds = time.perf_counter() - start
        results[name] = {"seconds": round(seconds, 3), "samples_per_second": round(len(x) / max(seconds, 1e-9), 1)}
        if y is not None:
            results[name]["accuracy"] = float(np.mean(outputs[name].argmax(1) == np.asarray(y)))
    micro = outputs["tflm"]
    for name in runtimes:
        other = outputs[name]
        agree = micro.argmax(1) == other.argmax(1)
        tied = _tied(micro) | _tied(other)
        results[name].update(
            agreement=float(agree.mean()), disagreements=int((~agree).sum()),
            tied_disagreements=int((~agree & tied).sum()),
            agreement_untied=float(agree[~tied].mean()) if (~tied).any() else None,
            max_code_diff=int(np.abs(micro - other).max()) if len(x) else 0)
    return results
