"""Tests of qrobust_keras/export/tflite.py (with clone.py and flatbuffer.py): int8 export, whitelist, fidelity."""

import os

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras.export import ExportError, TFLiteModel, export_tflite, flatbuffer
from qrobust_keras.export.clone import UnsupportedLayerError, plain_clone
from qrobust_keras.models import logits_model
from qrobust_keras.quantization import QuantPolicy

from .conftest import POLICIES, tiny_model


def _filters(path):
    """{output tensor name: (int8 filter codes, quantized dimension)} of every CONV/DEPTHWISE/FC op."""
    model = flatbuffer.read_model(open(path, "rb").read())
    sub = model.subgraphs[0]
    out = {}
    for _, i, name in flatbuffer.op_names(model):
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            op = sub.operators[i]
            t = sub.tensors[op.inputs[1]]
            key = (t.name.decode() if isinstance(t.name, bytes) else t.name)
            out[key] = (flatbuffer.tensor_values(model, int(op.inputs[1])), int(t.quantization.quantizedDimension))
    return out


@pytest.mark.parametrize("policy_name", list(POLICIES))
def test_export_every_policy_is_integer_only_and_matches(policy_name, tiny_inputs, tmp_path):
    model = tiny_model(POLICIES[policy_name])
    path = tmp_path / f"{policy_name}.tflite"
    info = export_tflite(model, path, tiny_inputs[:128], fidelity_data=tiny_inputs[128:], logits=True)
    data = path.read_bytes()
    assert info.size_bytes == len(data) and data[4:8] == b"TFL3"
    fb = flatbuffer.read_model(data)
    assert flatbuffer.check_int8_ops(fb) == []
    assert set(info.op_counts) <= flatbuffer.TFLM_INT8_OPS
    assert "QUANTIZE" not in info.op_counts and "DEQUANTIZE" not in info.op_counts
    assert info.op_counts["CONV_2D"] == 2 and info.op_counts["DEPTHWISE_CONV_2D"] == 1
    assert info.input_dtype == "int8" and info.output_dtype == "int8"
    assert abs(info.input_scale - 1 / 255) < 1e-6 and info.input_zero_point == -128
    assert {k: v for k, v in info.folded.items() if "bn" in k} == {"bn_1": "conv_1", "dw_bn": "dw", "pw_bn": "pw"}
    # logits of the file vs the Keras model on held-out inputs
    ref = logits_model(model)(tiny_inputs[128:], training=False).numpy()
    got = TFLiteModel(path).predict(tiny_inputs[128:])
    spread = ref.max() - ref.min()
    assert np.abs(got - ref).max() < 0.1 * spread, policy_name
    assert info.agreement >= 0.9, (policy_name, info.agreement)
    if POLICIES[policy_name].activation == "int4":
        assert set(info.activation_grids) == {"relu_1", "dw_relu", "relu_2"}


@pytest.mark.parametrize("policy_name,levels", [("ternary", 3), ("stochastic_ternary", 3), ("binary", 2)])
def test_ternary_and_binary_kernels_keep_their_levels_in_the_file(policy_name, levels, tiny_inputs, tmp_path):
    model = tiny_model(POLICIES[policy_name])
    path = tmp_path / "m.tflite"
    info = export_tflite(model, path, tiny_inputs[:64])
    assert set(info.kernel_levels) == {"conv_1", "dw", "pw", "logits"}
    filters = _filters(path)
    assert len(filters) == 4
    for name, (codes, axis) in filters.items():
        moved = np.moveaxis(codes, axis, 0).reshape(codes.shape[axis], -1)
        for row in moved:
            distinct = np.unique(row)
            if levels == 3:
                assert len(distinct) <= 3 and set(np.abs(distinct)) <= {0, int(np.abs(distinct).max())}, name
            else:
                assert len(distinct) == 2 and distinct[0] == -distinct[1], name
        n_levels = [len(np.unique(row)) for row in moved]
        assert max(n_levels) == levels, name


def test_int4_kernels_are_stored_as_exact_codes(tiny_inputs, tmp_path):
    model = tiny_model(POLICIES["int4"])
    info = export_tflite(model, tmp_path / "m.tflite", tiny_inputs[:64])
    assert set(info.exact_kernels) == {"conv_1", "dw", "pw", "logits"}
    for codes, axis in _filters(tmp_path / "m.tflite").values():
        # 4-bit symmetric grid: k in -7..7, stored as k * m per output channel (m <= 127 / max|k| refines the bias unit)
        per_channel = np.moveaxis(codes, axis, 0).reshape(codes.shape[axis], -1).astype(np.int64)
        for row in per_channel:
            m = np.gcd.reduce(np.abs(row[row != 0])) if np.any(row) else 1
            assert np.abs(row // m).max() <= 7 and np.all(row % m == 0)
            assert len(np.unique(row)) <= 15


def test_float_export(tiny_inputs, tmp_path):
    model = tiny_model(POLICIES["float"])
    info = export_tflite(model, tmp_path / "f.tflite", tiny_inputs[:64], int8=False)
    assert not info.int8 and info.input_dtype == "float32" and info.output_dtype == "float32"
    fb = flatbuffer.read_model((tmp_path / "f.tflite").read_bytes())
    assert flatbuffer.check_int8_ops(fb)  # float tensors everywhere: not an int8 graph
    got = TFLiteModel(tmp_path / "f.tflite").predict(tiny_inputs)
    np.testing.assert_allclose(got, model(tiny_inputs).numpy(), atol=1e-5)
    assert info.agreement == 1.0


def test_exact_grids_beat_calibrated_ranges(tiny_inputs, tmp_path):
    """With the QKeras grids written into the file, the int8 logits are closer to QKeras than with calibration."""
    model = tiny_model(POLICIES["int4"], seed=3)
    exact = export_tflite(model, tmp_path / "a.tflite", tiny_inputs[:128], fidelity_data=tiny_inputs[128:],
                          logits=True)
    calibrated = export_tflite(model, tmp_path / "b.tflite", tiny_inputs[:128], fidelity_data=tiny_inputs[128:],
                               logits=True, exact_activations=False)
    assert "MINIMUM" in calibrated.op_counts and "MINIMUM" not in exact.op_counts
    ref = logits_model(model)(tiny_inputs[128:]).numpy()
    err_exact = np.abs(TFLiteModel(tmp_path / "a.tflite").predict(tiny_inputs[128:]) - ref).mean()
    err_cal = np.abs(TFLiteModel(tmp_path / "b.tflite").predict(tiny_inputs[128:]) - ref).mean()
    assert err_exact < err_cal


def _file_and_keras_activation(model, path, x, layer):
    """(file tensor dequantized, Keras layer output, (scale, zero point)) of ``layer`` on inputs ``x``."""
    from ai_edge_litert.interpreter import Interpreter
    from qrobust_keras._keras import keras

    interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interp.resize_tensor_input(0, [len(x), *x.shape[1:]])
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], TFLiteModel(path).quantize_input(x))
    interp.invoke()
    detail = [d for d in interp.get_tensor_details() if f"{layer}/Relu" in d["name"] and len(d["shape"]) == 4][0]
    scale, zp = detail["quantization"]
    got = (interp.get_tensor(detail["index"]).astype(np.float64) - zp) * scale
    ref = keras.Model(model.input, model.get_layer(layer).output)(x).numpy()
    return got, ref, (scale, zp)


def test_first_quantized_relu_is_bit_exact(tiny_inputs, tmp_path):
    """conv_1 + relu_1 of an int4 model: the file's int8 activation equals QKeras' quantized_relu output exactly
    (up to rounding ties, at most a handful of elements)."""
    model = tiny_model(POLICIES["int4"])
    path = tmp_path / "m.tflite"
    export_tflite(model, path, tiny_inputs[:64])
    got, ref, (scale, zp) = _file_and_keras_activation(model, path, tiny_inputs[:4], "relu_1")
    assert scale == 0.25 and zp == 127 - 15
    assert np.mean(got != ref) < 0.002


def test_identity_shortcut_add_is_exact(tiny_inputs, tmp_path):
    """relu_2 = relu_q(relu_1 + pw_bn): the shortcut is on the 0.25 grid, so the branch tensor gets scale 0.25 and the
    ADD rounds exactly like QKeras (with the converter's calibrated branch scale 2.6% of relu_2 differed here)."""
    model = tiny_model(POLICIES["int4"])
    path = tmp_path / "m.tflite"
    export_tflite(model, path, tiny_inputs[:128])
    fb = flatbuffer.read_model(path.read_bytes())
    sub = fb.subgraphs[0]
    add = [sub.operators[i] for _, i, name in flatbuffer.op_names(fb) if name == "ADD"][0]
    assert sorted(float(sub.tensors[t].quantization.scale[0]) for t in add.inputs) == [0.25, 0.25]
    got, ref, _ = _file_and_keras_activation(model, path, tiny_inputs[128:], "relu_2")
    assert np.mean(got != ref) < 0.002


def test_calibrated_add_ranges_clip_the_branches_of_two_convolutions(cifar_small):
    """Without branch quantizers, ResNet-8 stacks 2-3 add two float convolution outputs: their int8 ranges are chosen
    to change the fewest grid bins. With them (the default) the model rounds the branches and nothing is calibrated."""
    from qrobust_keras.export.calibrate import calibrate_add_inputs

    (x_train, _), _ = cifar_small
    clone, plan = plain_clone(qrk.models.resnet8(policy="int4"), relu_clip=False)
    assert calibrate_add_inputs(clone, plan, x_train[:64]) == {}
    clone, plan = plain_clone(qrk.models.resnet8(policy="int4", quantize_add_inputs=False), relu_clip=False)
    ranges = calibrate_add_inputs(clone, plan, x_train[:64])
    assert sorted(ranges) == ["stack2_conv_b", "stack2_shortcut", "stack3_conv_b", "stack3_shortcut"]
    for name, (lo, hi) in ranges.items():
        out = clone.get_layer(name).output
        values = qrk._keras.keras.Model(clone.input, out)(x_train[:64]).numpy()
        assert lo <= 0 <= hi and values.min() <= lo and hi <= values.max(), name
    with pytest.raises(ValueError, match=r"percentiles must be .* in \(50, 100\]; got \(\)"):
        calibrate_add_inputs(clone, plan, x_train[:64], percentiles=())


def test_refuses_to_overwrite_and_writes_atomically(tiny_inputs, tmp_path):
    model = tiny_model(POLICIES["float"])
    path = tmp_path / "m.tflite"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_tflite(model, path, tiny_inputs[:16])
    assert path.read_bytes() == b"keep me"
    export_tflite(model, path, tiny_inputs[:16], overwrite=True)
    assert path.read_bytes()[4:8] == b"TFL3"
    assert os.listdir(tmp_path) == ["m.tflite"]  # no temporary file left behind


def test_bad_arguments_give_clear_errors(tiny_inputs, tmp_path):
    model = tiny_model(POLICIES["float"])
    with pytest.raises(ValueError, match="representative_data is required"):
        export_tflite(model, tmp_path / "a.tflite", None)
    with pytest.raises(ValueError, match=r"representative_data must have shape \(n, 12, 12, 3\)"):
        export_tflite(model, tmp_path / "a.tflite", tiny_inputs[:, :8])
    with pytest.raises(ValueError, match="labels must have one entry per fidelity sample"):
        export_tflite(model, tmp_path / "a.tflite", tiny_inputs[:16], labels=[0, 1])


def test_calibration_on_0_255_pixels_is_refused_before_conversion(tiny_inputs, tmp_path):
    # issue 26: uint8 0-255 calibration data gave a file with input_scale 1.0 that agreed with itself on that data
    # and with the Keras model on a third of real [0, 1] images
    model = tiny_model(POLICIES["int4"])
    pixels = np.round(tiny_inputs * 255).astype(np.uint8)
    for data in (pixels, pixels.astype(np.float32)):
        with pytest.raises(ValueError, match=r"representative_data must lie in \[0, 1\].*divide uint8 pixels by 255"):
            export_tflite(model, tmp_path / "a.tflite", data)
    with pytest.raises(ValueError, match=r"fidelity_data must lie in \[0, 1\]"):
        export_tflite(model, tmp_path / "a.tflite", tiny_inputs[:16], fidelity_data=pixels[:16])
    bad = tiny_inputs[:16].copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="representative_data contains 1 NaN or infinite values"):
        export_tflite(model, tmp_path / "a.tflite", bad)
    with pytest.raises(ValueError, match=r"input_range must be 'auto', None or \(low, high\)"):
        export_tflite(model, tmp_path / "a.tflite", tiny_inputs[:16], input_range=(1, 0))
    assert not (tmp_path / "a.tflite").exists()
    # a model whose inputs are not [0, 1] images states its own range, or none
    info = export_tflite(model, tmp_path / "b.tflite", tiny_inputs[:32] * 2 - 1, input_range=(-1, 1))
    assert info.size_bytes > 0


def test_ternary_activations_are_refused_with_a_clear_error(tiny_inputs, tmp_path):
    model = tiny_model(QuantPolicy(kernel="ternary", activation="ternary"))
    with pytest.raises(UnsupportedLayerError, match="relu_1.*no exact int8 TFLite equivalent"):
        export_tflite(model, tmp_path / "a.tflite", tiny_inputs[:16])
    assert not (tmp_path / "a.tflite").exists()


def test_plain_clone_equals_qkeras_model_without_activation_quantizers(tiny_inputs):
    """Weights-only quantization: the clone (quantized weights copied, BN folded) computes the QKeras function."""
    model = tiny_model(POLICIES["stochastic_ternary"])
    clone, plan = plain_clone(model)
    assert all(type(layer).__module__.startswith("tf_keras") for layer in clone.layers)
    assert plan.replaced["conv_1"] == "QConv2D -> Conv2D"
    np.testing.assert_allclose(clone(tiny_inputs).numpy(), model(tiny_inputs, training=False).numpy(), atol=2e-5)


def test_float_activation_export_fidelity_is_checked(tiny_inputs, tmp_path):
    info = export_tflite(tiny_model(POLICIES["binary"]), tmp_path / "m.tflite", tiny_inputs[:64], labels=None)
    assert info.accuracy_keras is None and info.n_fidelity == 64


def test_whitelist_rejects_float_ops(tiny_inputs, tmp_path):
    """A float file fails the int8 check by name: every op reads float tensors."""
    export_tflite(tiny_model(POLICIES["float"]), tmp_path / "f.tflite", tiny_inputs[:16], int8=False)
    problems = flatbuffer.check_int8_ops(flatbuffer.read_model((tmp_path / "f.tflite").read_bytes()))
    assert any("CONV_2D has the float input tensor" in p for p in problems)
    assert issubclass(ExportError, RuntimeError)


# -- real data: the fidelity goal -------------------------------------------------------------------------------------

def test_int4_resnet8_fidelity_on_cifar10(exported_int4, resnet8_int4, cifar_small):
    path, info = exported_int4
    assert info.n_fidelity == 1017
    assert info.accuracy_keras > 0.25  # trained, not random (10 classes)
    # The issue-6 goal. Measured 0.987 for this fixture: 0.955 with the first exporter, 0.979 after the bias-unit,
    # shortcut-ADD and ADD-range fixes, 0.982 once the model rounds its residual branches itself (no double rounding
    # in the ADDs of stacks 2-3), 0.987 with the argmax-preserving logits range: all with LiteRT's default (XNNPACK)
    # kernels. Measured since with the reference kernels, which compute what TFLite Micro computes: 0.977 (0.983
    # on the 1,001 samples without a top-score tie); this briefly trained fixture (31% accurate) has small margins.
    assert info.fidelity_kernels == "reference"
    assert info.agreement >= 0.97 and info.agreement_untied >= 0.975, info.to_markdown()
    assert abs(info.accuracy_tflite - info.accuracy_keras) <= 0.02
    # 7 quantized ReLUs + 5 residual-branch grids (stack1 conv_b, stacks 2-3 conv_b and shortcut)
    assert len(info.activation_grids) == 12 and len(info.exact_kernels) == 10
    assert len([k for k in info.folded if "_bn" in k or k == "bn_1"]) == 7
    assert set(info.op_counts) == {"CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"}
    assert any("argmax-preserving" in note for note in info.notes)


def test_two_convolution_adds_read_the_models_branch_grids(exported_int4):
    """Both inputs of every ADD are on the 0.25 grid with zero point 0 (what stack{s}_*_q compute), so the ADD and
    the ReLU grid after it add exact integers."""
    path, _ = exported_int4
    fb = flatbuffer.read_model(open(path, "rb").read())
    sub = fb.subgraphs[0]
    adds = [sub.operators[i] for _, i, name in flatbuffer.op_names(fb) if name == "ADD"]
    assert len(adds) == 3
    for add in adds:
        params = [(float(sub.tensors[t].quantization.scale[0]), int(sub.tensors[t].quantization.zeroPoint[0]))
                  for t in add.inputs]
        out = sub.tensors[add.outputs[0]].quantization
        assert (float(out.scale[0]), int(out.zeroPoint[0])) == (0.25, 112)
        assert (0.25, 0) in params and all(scale == 0.25 for scale, _ in params), params


def test_argmax_logit_range_is_finer_and_keeps_the_decision(resnet8_int4, cifar_small, tmp_path):
    from qrobust_keras.export.calibrate import calibrate_logit_range

    (x_train, _), (x_test, _) = cifar_small
    clone, _ = plain_clone(logits_model(resnet8_int4), relu_clip=False)
    lo, hi = calibrate_logit_range(clone, x_train[:300])
    z = np.sort(clone(x_train[:300]).numpy(), axis=1)
    assert lo <= min(z[:, -2].min(), 0.0) and hi >= max(z[:, -1].max(), 0.0)
    assert lo > z.min() and hi - lo < z.max() - z.min()  # narrower than the converter's min/max
    scales = {}
    for mode in ("argmax", "minmax"):
        export_tflite(resnet8_int4, tmp_path / f"{mode}.tflite", x_train[:300], logits=True, logit_range=mode)
        scales[mode] = TFLiteModel(tmp_path / f"{mode}.tflite").output_scale
    assert scales["argmax"] < 0.8 * scales["minmax"]
    with pytest.raises(ValueError, match="logit_range must be 'auto', 'argmax' or 'minmax'; got 'max'"):
        export_tflite(resnet8_int4, tmp_path / "x.tflite", x_train[:16], logit_range="max")
    with pytest.raises(ValueError, match="layer='fc' is not in model"):
        calibrate_logit_range(clone, x_train[:16], layer="fc")
    with pytest.raises(ValueError, match="margin must be a number >= 0"):
        calibrate_logit_range(clone, x_train[:16], margin=-1)


def test_stochastic_ternary_resnet8_fidelity_on_cifar10(resnet8_stochastic_ternary, cifar_small, tmp_path):
    (x_train, _), (x_test, y_test) = cifar_small
    info = export_tflite(resnet8_stochastic_ternary, tmp_path / "st.tflite", x_train[:300],
                         fidelity_data=(x_test, y_test))
    assert info.accuracy_keras > 0.3
    # The issue-6 goal is 98% agreement, for the stq recipes' policy (stochastic-ternary kernels, int4 activations,
    # int8 first/last layers); the fully trained int4_at model measures 0.990 (docs/reproduction.md). This briefly
    # trained fixture lands elsewhere on every CPU, and its low margins tie in the int8 softmax output (argmax then
    # takes the lower index). Measured overall / untied agreement: 0.985 / - (5 epochs from scratch, first CPU);
    # 0.979 / 0.995 (the same on an AMD EPYC, 16 of 21 disagreements tied); 0.983 / 0.992 (3 epochs from the float
    # weights, the fixture now) and 0.971 / 0.980 (the same with one thread per process), all with LiteRT's default
    # kernels; with the reference kernels (what TFLite Micro computes, the exporter's measure since): 0.955 / 0.962.
    assert info.agreement >= 0.94 and info.agreement_untied >= 0.95, info.to_markdown()
    got = TFLiteModel(tmp_path / "st.tflite", kernels="reference").predict(x_test)
    top2 = np.sort(got, axis=1)[:, -2:]
    tied = top2[:, 0] == top2[:, 1]
    agree = got.argmax(1) == resnet8_stochastic_ternary.predict(x_test, verbose=0).argmax(1)
    assert info.top_ties == int(tied.sum()) and info.agreement_untied == float(np.mean(agree[~tied]))
    assert "top-score ties in the file / agreement without them | " + str(info.top_ties) in info.to_markdown()
    assert set(info.kernel_levels.values()) == {3} and len(info.kernel_levels) == 8  # int8 conv_1 and logits
    assert len(info.activation_grids) == 12
