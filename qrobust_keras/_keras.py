"""The one place qrobust-keras imports TensorFlow, Keras 2 (tf_keras) and QKeras.

QKeras 0.9 only works with the Keras 2 API. From TensorFlow 2.16 on, ``tf.keras`` is Keras 3 unless the environment
variable ``TF_USE_LEGACY_KERAS=1`` is set *before TensorFlow is first imported*; this module sets it, checks that it
took effect, and raises an ImportError that says what to do when it is too late (the "Keras-3 trap").

It also applies the QKeras compatibility fixes the library relies on, so users never meet them:

* ``QActivation.from_config`` rebuilds its quantizer object from the nested dict the ``.keras`` format stores.
* ``qkeras.utils.quantized_model_from_json`` (behind ``model_quantize``/``clone_model``) fills ``registered_name``.
* ``stochastic_ternary``/``stochastic_binary`` sample when their layer runs with ``training=True`` (QKeras reads only
  ``K.learning_phase()``, which ``fit`` never sets, so they were deterministic during training).
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
import warnings

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


def _patch_qactivation_from_config() -> None:
    """Let ``QActivation`` load from ``.keras`` files.

    QKeras' ``QActivation.get_config`` returns the quantizer *object*; the ``.keras`` format stores it as a nested
    ``{"class_name": "quantized_relu", "config": {...}}`` dict, and QKeras' ``from_config`` passes that dict on as the
    quantizer, so tf_keras rejects the layer ("QActivation could not be deserialized properly"). The patch turns the
    nested dict back into the quantizer object before the layer is built. Idempotent.
    """
    cls = qkeras.QActivation
    if getattr(cls.from_config, "_qrobust_patched", False):
        return
    original = cls.from_config.__func__

    def from_config(klass, config, custom_objects=None):
        activation = config.get("activation")
        if isinstance(activation, dict) and "class_name" in activation:
            config = dict(config)
            with keras.utils.custom_object_scope(qkeras_custom_objects()):
                config["activation"] = keras.saving.deserialize_keras_object(activation)
        return original(klass, config)

    from_config._qrobust_patched = True
    cls.from_config = classmethod(from_config)


def _patch_quantized_model_from_json() -> None:
    """Make ``qkeras.utils.model_quantize`` / ``clone_model`` configs resolvable by tf_keras.

    ``model_quantize`` renames float layer configs to ``QConv2D`` etc. but keeps ``module: keras.layers`` and
    ``registered_name: None``; tf_keras looks classes up by ``registered_name`` and fails with "Could not locate class
    'QConv2D'". The patch fills ``registered_name`` for every QKeras class before ``model_from_json``. Idempotent.
    """
    import json

    utils = qkeras.utils
    if getattr(utils.quantized_model_from_json, "_qrobust_patched", False):
        return
    original = utils.quantized_model_from_json
    names = set(qkeras_custom_objects())

    def fix(node):
        if isinstance(node, dict):
            if node.get("class_name") in names and "config" in node:
                node["registered_name"] = node["class_name"]
                node["module"] = None
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)
        return node

    def quantized_model_from_json(json_string, custom_objects=None):
        return original(json.dumps(fix(json.loads(json_string))), custom_objects)

    quantized_model_from_json._qrobust_patched = True
    utils.quantized_model_from_json = quantized_model_from_json


def _patch_stochastic_quantizers_follow_training() -> None:
    """Make QKeras stochastic quantizers sample whenever their layer is called with ``training=True``.

    QKeras' ``stochastic_ternary``/``stochastic_binary`` choose between sampling and the deterministic quantizer with
    ``K.learning_phase()``, which ``model.fit`` never sets in TF2: without this patch they are silently
    deterministic during training (measured: identical losses for repeated ``fit`` steps at lr=0). The patch reads
    the Keras call context: when the enclosing layer call has ``training=True`` the learning phase is 1 for the
    quantizer. Otherwise QKeras' own behaviour is kept, so an explicit ``learning_phase_scope(1)`` (used by EOT in
    the attacks) still samples at inference. Idempotent.
    """
    from tf_keras.src.engine import base_layer_utils

    for cls in (qkeras_quantizers.stochastic_ternary, qkeras_quantizers.stochastic_binary):
        if getattr(cls.__call__, "_qrobust_patched", False):
            continue
        original = cls.__call__

        def __call__(self, x, _original=original):
            training = base_layer_utils.call_context().training
            if training is True or (isinstance(training, int) and not isinstance(training, bool) and training == 1):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # learning_phase_scope is deprecated but is what QKeras reads
                    with keras.backend.learning_phase_scope(1):
                        return _original(self, x)
            return _original(self, x)

        __call__._qrobust_patched = True
        cls.__call__ = __call__


# QKeras quantizers are serialized through keras.constraints.serialize (correctly); tf_keras warns on every layer.
warnings.filterwarnings("ignore", message=r"The `keras.constraints.serialize\(\)` API should only be used")
# The library saves .h5 on purpose (the format QKeras models round-trip through); tf_keras warns on every save.
warnings.filterwarnings("ignore", message=r"You are saving your model as an HDF5 file")
_register_qkeras_serializables()
_patch_qactivation_from_config()
_patch_quantized_model_from_json()
_patch_stochastic_quantizers_follow_training()

layers = keras.layers

__all__ = ["tf", "keras", "layers", "qkeras", "qkeras_quantizers", "qkeras_custom_objects", "check_keras2"]
