"""Tests of qrobust_keras/export/runner.py: TFLiteModel against the raw interpreters, InputGrid, clear errors."""

import numpy as np
import pytest

from qrobust_keras.export import InputGrid, TFLiteFormatError, TFLiteModel, export_tflite

from .conftest import POLICIES, tiny_model


@pytest.fixture(scope="module")
def int8_file(tiny_inputs, tmp_path_factory):
    path = tmp_path_factory.mktemp("runner") / "tiny_int4.tflite"
    export_tflite(tiny_model(POLICIES["int4"]), path, tiny_inputs[:64], logits=True)
    return path


@pytest.fixture(scope="module")
def float_file(tiny_inputs, tmp_path_factory):
    path = tmp_path_factory.mktemp("runner") / "tiny_float.tflite"
    export_tflite(tiny_model(POLICIES["float"]), path, tiny_inputs[:64], int8=False)
    return path


def _raw_litert(path, q, **kwargs):
    """One invoke() per sample on the plain LiteRT interpreter: the reference the runner must reproduce."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), **kwargs)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for i in range(len(q)):
        interp.set_tensor(inp["index"], q[i:i + 1])
        interp.invoke()
        rows.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(rows)


def test_predict_matches_raw_litert_exactly(int8_file, tiny_inputs):
    tfl = TFLiteModel(int8_file)
    x = tiny_inputs[:77]
    scale, zp = tfl.input_scale, tfl.input_zero_point
    q = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(tfl.quantize_input(x), q)
    raw = _raw_litert(int8_file, q)
    for batch_size in (None, 16, 7, 1):
        got = tfl.predict(x, batch_size=batch_size)
        expected = (raw.astype(np.float32) - tfl.output_zero_point) * np.float32(tfl.output_scale)
        np.testing.assert_array_equal(got, expected)
    assert tfl.batched and tfl.is_int8 and tfl.num_classes == 5


def test_reference_kernels_are_within_one_code_of_tflite_micro(int8_file, tiny_inputs):
    """What the microcontroller computes: the TFLM host interpreter and LiteRT's reference kernels agree up to one
    output code (their int8 MEAN/depthwise rounding differs in rare elements)."""
    x = tiny_inputs[:12]
    micro_model = TFLiteModel(int8_file, runtime="tflm")
    micro = micro_model.predict(x)
    ref = TFLiteModel(int8_file, kernels="reference").predict(x)
    codes = np.abs(micro - ref) / micro_model.output_scale
    assert codes.max() <= 1.0 + 1e-4 and np.mean(codes > 0.5) <= 0.1
    assert np.array_equal(micro.argmax(1), ref.argmax(1))
    tf_interp = TFLiteModel(int8_file, runtime="tflite", kernels="reference").predict(x)
    np.testing.assert_array_equal(tf_interp, ref)


def test_float_file_runs_and_int8_is_enforced_when_asked(float_file, tiny_inputs):
    tfl = TFLiteModel(float_file)
    assert tfl.input_grid is None and not tfl.is_int8
    raw = _raw_litert(float_file, tiny_inputs[:5].astype(np.float32))
    np.testing.assert_array_equal(tfl.predict(tiny_inputs[:5]), raw)
    with pytest.raises(ValueError, match="float32 input and float32 output; an int8 file"):
        TFLiteModel(float_file, require_int8=True)


def test_truncated_and_foreign_files_give_clear_errors(int8_file, tmp_path):
    data = int8_file.read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(TFLiteFormatError, match="truncated or corrupted|cannot be loaded"):
        TFLiteModel(cut)
    foreign = tmp_path / "model.h5"
    foreign.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(TFLiteFormatError, match="is not a TFLite flatbuffer"):
        TFLiteModel(foreign)
    with pytest.raises(FileNotFoundError, match="no such .tflite file"):
        TFLiteModel(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="runtime must be one of"):
        TFLiteModel(int8_file, runtime="onnx")


def test_wrong_input_shapes_give_clear_errors(int8_file, tiny_inputs):
    tfl = TFLiteModel(int8_file)
    with pytest.raises(ValueError, match=r"single sample of shape \(12, 12, 3\)"):
        tfl.predict(tiny_inputs[0])
    with pytest.raises(ValueError, match=r"x must have shape \(n, 12, 12, 3\)"):
        tfl.predict(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tfl.predict(tiny_inputs[:2], batch_size=0)


def test_nan_and_wrong_scale_inputs_are_refused(int8_file, tiny_inputs):
    # issue 26: NaN gave scores (a numpy warning only) and 0-255 pixels saturated every sample to one class
    tfl = TFLiteModel(int8_file)
    low, high = tfl.input_range()
    assert low <= 0.0 and 0.99 <= high <= 1.01  # calibrated on [0, 1] images
    bad = tiny_inputs[:4].copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite values"):
        tfl.predict(bad)
    with pytest.raises(ValueError, match=r"x has values in \[0, 255\].*saturate.*divide uint8 pixels by 255"):
        tfl.predict(np.round(tiny_inputs[:4] * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="x must be a real numeric array"):
        tfl.predict(tiny_inputs[:4].astype(str))
    # a step outside the grid (where an attack may land) saturates as on the device, without an error
    np.testing.assert_array_equal(tfl.predict(np.clip(tiny_inputs[:4] + 0.2, 0, 1.2)).argmax(1),
                                  tfl.predict(np.clip(tiny_inputs[:4] + 0.2, 0, high)).argmax(1))


def test_input_grid_project_keeps_eps_and_lands_on_the_grid(int8_file):
    grid = TFLiteModel(int8_file).input_grid
    assert isinstance(grid, InputGrid) and grid.zero_point == -128
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, size=(50, 12, 12, 3)) / 255.0).astype(np.float32)
    eps = 4 / 255
    x_adv = np.clip(x + rng.uniform(-2 * eps, 2 * eps, size=x.shape), 0, 1).astype(np.float32)
    out = grid.project(x, x_adv, eps)
    assert np.abs(out.astype(np.float64) - x).max() <= eps + 1e-7
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(grid.snap(out) - out).max() <= 1e-6          # on the grid: the device sees `out`
    # the nearest admissible grid point: no grid point inside the box is closer to x_adv
    assert np.abs(out - np.clip(x_adv, x - eps, x + eps)).max() <= grid.scale / 2 + 1e-6


def test_foreign_file_with_a_fixed_batch_of_one(tmp_path):
    """A file made without our exporter (plain converter, batch fixed to 1, Reshape to a constant shape): the
    runner detects whether batching is safe and otherwise runs one sample per invoke, with identical results."""
    from qrobust_keras._keras import keras, tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2), batch_size=1)
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.Reshape((16 * 4,))(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    rng = np.random.default_rng(0)
    rep = rng.uniform(size=(32, 6, 6, 2)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rep[i:i + 1]] for i in range(len(rep)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = tmp_path / "foreign.tflite"
    path.write_bytes(converter.convert())
    tfl = TFLiteModel(path)
    assert tfl.is_int8 and tfl.input_shape == (6, 6, 2) and tfl.num_classes == 3
    x = rng.uniform(size=(9, 6, 6, 2)).astype(np.float32)
    raw = _raw_litert(path, tfl.quantize_input(x).astype(np.int8))
    expected = (raw.astype(np.float32) - tfl.output_zero_point) * np.float32(tfl.output_scale)
    np.testing.assert_array_equal(tfl.predict(x), expected)
    assert np.abs(tfl.predict(x) - model(x).numpy()).max() < 0.05
