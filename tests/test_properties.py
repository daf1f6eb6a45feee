"""Property-based tests over the public entry points (issue 26): random shapes, dtypes, ranges, NaN/Inf, budgets,
spec strings and truncated files. Every call either succeeds with a valid result or raises one of the library's
documented exceptions, raised by the library itself with a message naming the argument; never a raw error from
TensorFlow, h5py or numpy.
"""

from __future__ import annotations

import os
import pickle
import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qrobust_keras as qrk
from qrobust_keras._checks import IMAGE_RANGE, check_input_batch
from qrobust_keras._keras import keras
from qrobust_keras.cli.parsing import parse_attacks, parse_eps, parse_eps_list
from qrobust_keras.data.cifar10 import read_pickle_batch
from qrobust_keras.data.errors import CorruptDataError
from qrobust_keras.data.mfcc import mfcc
from qrobust_keras.data.wav import read_wav
from qrobust_keras.export.runner import TFLiteFormatError, TFLiteModel
from qrobust_keras.models import ModelFileError

# The library documents ValueError (bad values, including its CorruptDataError, TFLiteFormatError, ...), TypeError
# (wrong kinds of objects) and the unpickling refusal; anything else escaping is a defect.
DOCUMENTED = (ValueError, TypeError, pickle.UnpicklingError)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])


def _refused(call, *names: str):
    """Run ``call``; return its result, or None after checking the refusal came from the library, as a documented
    exception whose message names one of ``names``."""
    try:
        return call()
    except DOCUMENTED as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        origin = frames[-1].filename if frames else ""
        assert f"{os.sep}qrobust_keras{os.sep}" in origin, f"{type(exc).__name__} escaped from {origin}: {exc}"
        assert any(n in str(exc) for n in names), f"message names none of {names}: {exc}"
        return None


_DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint8, np.int16, np.int32, np.bool_])


_SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf])


def _arrays(shape):
    def elements(dt):
        if np.dtype(dt).kind != "f":
            return None
        return st.one_of(st.floats(-300, 300, width=8 * np.dtype(dt).itemsize), _SPECIAL)

    return _DTYPES.flatmap(lambda dt: hnp.arrays(dt, shape, elements=elements(dt)))


_IMAGE_BATCHES = st.one_of(
    _arrays(st.tuples(st.integers(0, 3), st.just(4), st.just(4), st.just(3))),            # right sample shape
    _arrays(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)),            # anything
    st.builds(lambda n, v: np.full((n, 4, 4, 3), v, np.float32), st.integers(1, 3),       # valid, then edge values
              st.sampled_from([0.0, 1.0, 0.5, 1 + 1e-3, -1e-3, np.nan, np.inf, 255.0])),
)
_EPS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 300),
                 st.sampled_from([0, 1 / 255, 8 / 255, 1.0, "8/255", None, True]))


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    return model


@pytest.fixture(scope="module")
def tiny_int8_file(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("props") / "tiny.tflite"
    rep = np.random.default_rng(0).uniform(size=(64, 4, 4, 3)).astype(np.float32)
    qrk.export.export_tflite(tiny_model, path, rep)
    return str(path)


@PROPERTY
@given(x=_IMAGE_BATCHES)
def test_input_check_returns_a_valid_batch_or_names_x(x):
    out = _refused(lambda: check_input_batch(x, "x", IMAGE_RANGE), "x ")
    if out is not None:
        assert out.dtype == np.float32 and out.shape == np.shape(x) and len(out) > 0
        assert np.isfinite(out).all() and out.min() >= -1e-6 and out.max() <= 1 + 1e-6


@PROPERTY
@given(x=_IMAGE_BATCHES, eps=_EPS, norm=st.sampled_from(["inf", "2", 2, np.inf, "l1", "bogus", None]),
       attack=st.sampled_from(["fgsm", "pgd"]))
def test_attacks_return_points_inside_the_budget_or_refuse(tiny_model, x, eps, norm, attack):
    y = np.zeros(len(x) if np.ndim(x) else 0, np.int64)
    fn = {"fgsm": qrk.attacks.fgsm, "pgd": lambda *a, **k: qrk.attacks.pgd(*a, steps=2, **k)}[attack]
    adv = _refused(lambda: fn(tiny_model, x, y, eps=eps, norm=norm, verbose=0), "x ", "x,", "eps", "norm", "y ")
    if adv is not None:
        x32 = np.asarray(x, np.float32)
        assert adv.shape == x32.shape and np.isfinite(adv).all()
        assert adv.min() >= 0 and adv.max() <= 1
        if str(norm) in ("inf", str(np.inf)):
            assert np.abs(adv - x32).max() <= float(eps) + 1e-6


@PROPERTY
@given(x=_IMAGE_BATCHES)
def test_the_int8_runner_scores_valid_inputs_or_refuses(tiny_int8_file, x):
    tfl = TFLiteModel(tiny_int8_file)
    scores = _refused(lambda: tfl.predict(x), "x ", "x must")
    if scores is not None:
        assert scores.shape == (len(x), 3) and np.isfinite(scores).all()


@PROPERTY
@given(w=st.one_of(_arrays(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)),
                   st.builds(lambda v, n: np.full((n, 1600), v, np.float32), st.sampled_from(
                       [0.0, 0.5, -1.0, 1.5, np.nan, -np.inf, 3000.0]), st.integers(1, 2))))
def test_mfcc_gives_finite_features_or_refuses(w):
    feats = _refused(lambda: mfcc(w), "waveforms")
    if feats is not None and np.size(feats):
        assert np.isfinite(feats).all() and feats.shape[-3:] == (49, 10, 1)


@PROPERTY
@given(text=st.one_of(st.text(max_size=12), st.from_regex(r"-?[0-9]{0,3}(\.[0-9]{0,2})?(/-?[0-9]{0,3})?",
                                                             fullmatch=True)))
def test_budget_strings_parse_into_0_1_or_refuse(text):
    value = _refused(lambda: parse_eps(text), "eps")
    if value is not None:
        assert 0 < value <= 1
    values = _refused(lambda: parse_eps_list(text + ",1/255"), "eps")
    if values is not None:
        assert values == sorted(set(values)) and all(0 < v <= 1 for v in values)
    names = _refused(lambda: parse_attacks(text), "--attacks")
    if names is not None:
        assert names and all(isinstance(n, str) for n in names)


@PROPERTY
@given(spec=st.one_of(st.text(max_size=10), st.sampled_from(["int4", "int8", "ternary", "stochastic_ternary",
                                                             "binary", "float", "int0", "int99", "quantized_bits(4)"]),
                      st.integers(), st.none(), st.dictionaries(st.sampled_from(["kernel", "activation", "x"]),
                                                                st.sampled_from(["int4", "float", "nope", 3]))))
def test_quantization_specs_build_a_policy_or_refuse(spec):
    policy = _refused(lambda: qrk.quantization.QuantPolicy.from_any(spec), "spec", "kernel", "activation", "policy",
                      "override", "field")
    if policy is not None:
        assert qrk.quantization.QuantPolicy.from_any(policy.get_config()).get_config() == policy.get_config()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.one_of(_EPS, st.lists(_EPS, max_size=3)), n=st.one_of(st.none(), st.integers(-2, 5)),
       attacks=st.one_of(st.none(), st.lists(st.sampled_from(["fgsm", "pgd", "nope", ""]), max_size=2)),
       suite=st.sampled_from([None, "quick", "bogus"]))
def test_evaluation_reports_or_refuses(tiny_model, eps, n, attacks, suite):
    x = np.random.default_rng(0).uniform(size=(4, 4, 4, 3)).astype(np.float32)
    y = np.arange(4) % 3
    if suite is not None and attacks is not None:
        attacks = None  # a suite replaces the attack list; both at once is refused, tested in test_suite.py
    report = _refused(lambda: qrk.evaluation.evaluate_robustness(
        tiny_model, x, y, attacks=attacks, eps=eps, n=n, suite=suite if attacks is None else None, verbose=0,
        attack_kwargs={"pgd": {"steps": 2}}), "eps", "n ", "n=", "attack", "suite")
    if report is not None:
        assert 0 <= report.clean_accuracy <= 1
        assert all(0 <= a <= report.clean_accuracy + 1e-9 for a in report.robust_accuracy)


def _truncations(data: bytes):
    return st.integers(0, len(data) - 1).map(lambda n: data[:n])


@pytest.fixture(scope="module")
def good_files(tiny_model, tiny_int8_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    with open(tiny_int8_file, "rb") as f:
        tflite = f.read()
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(800, np.int16).tobytes())
    tiny_model.save(folder / "tiny.h5")
    h5 = (folder / "tiny.h5").read_bytes()
    return folder, {"tflite": tflite, "pickle": pickle.dumps(batch), "wav": buf.getvalue(), "h5": h5}


@PROPERTY
@given(data=st.data(), kind=st.sampled_from(["tflite", "pickle", "wav", "h5"]))
def test_truncated_files_are_refused_naming_the_file(good_files, data, kind):
    folder, contents = good_files
    cut = data.draw(_truncations(contents[kind]))
    path = folder / f"cut.{kind}"
    path.write_bytes(cut)
    read = {"tflite": lambda: TFLiteModel(str(path)), "pickle": lambda: read_pickle_batch(path),
            "wav": lambda: read_wav(path), "h5": lambda: qrk.models.load_model(str(path))}[kind]
    with pytest.raises((TFLiteFormatError, CorruptDataError, ModelFileError)) as caught:
        read()
    assert "cut." in str(caught.value) or "model" in str(caught.value), str(caught.value)
