"""Tests of qrobust_keras/_keras.py: the Keras-3 trap is detected with instructions; normal import gives Keras 2."""

import os
import subprocess
import sys


def _run(code: str, env_update: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(env_update)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_import_sets_legacy_keras_before_tensorflow():
    result = _run("import qrobust_keras, os, tensorflow as tf; print(os.environ['TF_USE_LEGACY_KERAS'], "
                  "tf.keras.layers.Layer.__module__)", {})
    assert result.returncode == 0, result.stderr[-2000:]
    flag, module = result.stdout.split()[-2:]
    assert flag == "1" and module.startswith("tf_keras")


def test_tensorflow_imported_first_with_keras3_raises_clear_import_error():
    result = _run("import tensorflow as tf; tf.keras.layers.Dense\nimport qrobust_keras", {})
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr and "import qrobust_keras before tensorflow" in result.stderr


def test_tensorflow_imported_first_with_variable_set_is_fine():
    result = _run("import tensorflow\nimport qrobust_keras as q\nprint(q.models.resnet8(policy='int4').count_params())",
                  {"TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "78666"
