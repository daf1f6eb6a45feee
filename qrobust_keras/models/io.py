"""Loading saved models of the library (.h5, SavedModel, .keras) with every custom object registered.

Example:

>>> import qrobust_keras as qrk
>>> model = qrk.models.resnet8(policy="int4")
>>> model.save("/tmp/resnet8_int4.h5")
>>> again = qrk.load_model("/tmp/resnet8_int4.h5")
"""

from __future__ import annotations

import os

from qrobust_keras._keras import keras, qkeras_custom_objects


def custom_objects() -> dict:
    """QKeras layers/quantizers plus every Keras object the library registered (package ``qrobust_keras``)."""
    objects = qkeras_custom_objects()
    objects.update({k: v for k, v in keras.saving.get_custom_objects().items()})
    return objects


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """Load a model saved as .h5, .keras or a SavedModel folder, with QKeras and qrobust_keras objects registered.

    Args:
        path: file (``.h5``/``.hdf5``/``.keras``) or SavedModel directory.
        compile: whether to restore the training configuration (optimizer, loss) when the file has one.

    Returns:
        The loaded ``tf_keras`` model.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is neither a file of a known suffix nor a SavedModel directory.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"path={path!r} does not exist; expected a .h5, .keras file or a SavedModel folder")
    is_dir = os.path.isdir(path)
    if is_dir and not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"path={path!r} is a folder without saved_model.pb; expected a SavedModel folder")
    if not is_dir and not path.lower().endswith((".h5", ".hdf5", ".keras")):
        raise ValueError(f"path={path!r} has an unknown suffix; accepted: .h5, .hdf5, .keras or a SavedModel folder")
    import qrobust_keras  # noqa: F401  (imports every subpackage, registering the library's custom layers)

    with keras.utils.custom_object_scope(custom_objects()):
        return keras.models.load_model(path, compile=compile)
