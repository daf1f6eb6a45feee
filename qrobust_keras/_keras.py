"""The one place qrobust-keras imports TensorFlow, Keras 2 (tf_keras) and QKeras.

QKeras 0.9 only works with the Keras 2 API. From TensorFlow 2.16 on, ``tf.keras`` is Keras 3 unless the environment
variable ``TF_USE_LEGACY_KERAS=1`` is set *before TensorFlow is first imported*; this module sets it, checks that it
took effect, and raises an ImportError that says what to do when it is too late (the "Keras-3 trap").

It also applies the QKeras compatibility fixes the library relies on, so users never meet them:

* QKeras classes are registered as Keras serializables, so configs that carry their module path
  (``qkeras.qlayers``) resolve in tf_keras: ``.keras`` files with QActivation load, and ``qkeras.utils``'
  ``clone_model`` / ``model_quantize`` / ``model_save_quantized_weights`` work on clones.

Example:

>>> from qrobust_keras._keras import tf, keras, qkeras
>>> keras.layers.Dense.__module__.startswith("tf_keras")
True
"""

from __future__ import annotations

import os
import sys

_TRAP_MESSAGE = (
    "qrobust_keras needs the Keras 2 API (tf_keras), but TensorFlow was imported before qrobust_keras with Keras 3 "
    "active (tf.keras is {module}). QKeras cannot work with Keras 3. Fix: import qrobust_keras before tensorflow, "
    "or set the environment variable TF_USE_LEGACY_KERAS=1 before anything imports tensorflow "
    "(e.g. `export TF_USE_LEGACY_KERAS=1`, or os.environ['TF_USE_LEGACY_KERAS'] = '1' at the very top of your "
    "script), and restart the Python process."
)


def _legacy_keras_requested() -> bool:
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


if "tensorflow" not in sys.modules and not _legacy_keras_requested():
    # Must happen before the first `import tensorflow` anywhere in the process.
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


def keras_backend_module() -> str:
    """Module path of ``tf.keras.layers.Layer``: ``tf_keras...`` under Keras 2, ``keras...`` under Keras 3."""
    return tf.keras.layers.Layer.__module__


def check_keras2() -> None:
    """Raise ImportError with instructions when ``tf.keras`` is Keras 3 (the Keras-3 trap)."""
    module = keras_backend_module()
    if not module.startswith("tf_keras"):
        raise ImportError(_TRAP_MESSAGE.format(module=module))


check_keras2()

import tf_keras as keras  # noqa: E402
import qkeras  # noqa: E402
from qkeras import quantizers as qkeras_quantizers  # noqa: E402


def qkeras_custom_objects() -> dict:
    """Every QKeras layer and quantizer by name, for ``custom_objects`` of Keras loaders."""
    objects = dict(qkeras.utils._add_supported_quantized_objects({}) or {})
    if not objects:
        qkeras.utils._add_supported_quantized_objects(objects)
    return objects


def _register_qkeras_serializables() -> None:
    """Register QKeras classes under their plain names in tf_keras' global custom-object table.

    QKeras configs are written with ``module: qkeras.qlayers`` (and similar); tf_keras cannot locate such classes by
    module path and fails with "Could not locate class 'QConv2D'" or "QActivation could not be deserialized
    properly". Registering the classes globally makes every tf_keras loader (``load_model`` for .keras/.h5,
    ``clone_model``, ``model_from_json``) resolve them.
    """
    table = keras.saving.get_custom_objects()
    for name, obj in qkeras_custom_objects().items():
        table.setdefault(name, obj)


_register_qkeras_serializables()

layers = keras.layers

__all__ = ["tf", "keras", "layers", "qkeras", "qkeras_quantizers", "qkeras_custom_objects", "check_keras2"]
