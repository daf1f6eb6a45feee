"""Why an int8 file in TFLite Micro disagrees with its Keras model more than in LiteRT's default kernels: TFLite
Micro and LiteRT's reference kernels requantize each int32 accumulator with two roundings (gemmlowp's
SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT), so a value up to 2^-(r+1) output codes below a rounding
boundary (r: the multiplier's right shift) is rounded up; XNNPACK rounds once, in float32. This test reproduces the
reference kernels' output of a real convolution bit for bit from its accumulators with the two roundings, and shows
that rounding once gives other codes (docs/export.md, "Kernels")."""

import math

import numpy as np

from qrobust_keras._keras import tf


def _quantized_multiplier(m: float) -> tuple[int, int]:
    q, shift = math.frexp(m)
    q = int(round(q * (1 << 31)))
    return (q // 2, shift + 1) if q == 1 << 31 else (q, shift)


def _double_rounding(acc: np.ndarray, m: float) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier (without TFLITE_SINGLE_ROUNDING) on int64 accumulators."""
    q, shift = _quantized_multiplier(m)
    x = acc.astype(np.int64) * (1 << max(shift, 0))
    ab = x * q
    high = np.trunc((ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))) / (1 << 31)).astype(np.int64)
    e = max(-shift, 0)
    mask = (1 << e) - 1
    return (high >> e) + ((high & mask) > (mask >> 1) + (high < 0))


def test_reference_kernels_requantize_with_two_roundings(exported_int4, cifar_small):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path, _ = exported_int4
    _, (x_test, _) = cifar_small
    x = x_test[:32]
    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    scale, zero = inp["quantization"]
    interp.set_tensor(inp["index"], np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8))
    interp.invoke()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    # the second convolution: its input is the first's int8 output, so it sees exactly what the file computed
    op = [o for o in interp._get_ops_details() if o["op_name"] == "CONV_2D"][1]
    i, w, b = op["inputs"][:3]
    o = op["outputs"][0]
    s_in, z_in = tensors[i]["quantization"]
    s_out, z_out = tensors[o]["quantization"]
    w_scales = tensors[w]["quantization_parameters"]["scales"]
    kernel = np.transpose(interp.get_tensor(w).astype(np.float64), (1, 2, 3, 0))
    acc = tf.nn.conv2d(interp.get_tensor(i).astype(np.float64) - z_in, kernel, 1, "SAME").numpy()
    acc = np.round(acc + interp.get_tensor(b)).astype(np.int64)       # exact: integer sums far below 2^53
    got = interp.get_tensor(o).astype(np.int64)
    lo, hi = got.min(), got.max()                                       # the fused ReLU's clamp
    mults = [float(s_in) * float(ws) / float(s_out) for ws in w_scales]
    twice = np.stack([_double_rounding(acc[..., c], m) for c, m in enumerate(mults)], -1) + z_out
    once = np.stack([np.floor(acc[..., c] * m + 0.5) for c, m in enumerate(mults)], -1).astype(np.int64) + z_out
    assert np.array_equal(np.clip(twice, lo, hi), got)
    differs = np.clip(once, lo, hi) != got
    assert differs.any()                                                # rounding once is not what the file does
    # where they differ, rounding twice went up from a value just below a rounding boundary
    exact = np.stack([acc[..., c] * m for c, m in enumerate(mults)], -1)[differs]
    assert np.all(got[differs] == np.floor(exact + 0.5) + z_out + 1)
    assert np.all(np.ceil(exact - 0.5) - (exact - 0.5) < 2.0 ** -6)
