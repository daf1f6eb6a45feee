"""Loading saved models of the library (.h5, SavedModel, .keras) with every custom object registered, and copying
weights between two builds of one architecture (e.g. float weights into a quantized model).

Example:

>>> import qrobust_keras as qrk
>>> model = qrk.models.resnet8(policy="int4")
>>> model.save("/tmp/resnet8_int4.h5")
>>> again = qrk.load_model("/tmp/resnet8_int4.h5")
>>> ternary = qrk.models.resnet8(policy="stochastic_ternary")
>>> copied = qrk.models.copy_weights_by_name(again, ternary)
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
    import qrobust_keras

    qrobust_keras.import_all()  # registers every custom layer and quantizer of the library

    with keras.utils.custom_object_scope(custom_objects()):
        return keras.models.load_model(path, compile=compile)


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy the weights of every layer of ``target`` that has weights from the layer of ``source`` with its name.

    Layers without weights (activations, the residual-branch quantizers) may differ between the two models.

    Returns:
        The names of the layers copied.

    Raises:
        ValueError: a weighted layer of ``target`` is missing in ``source`` or its weights have other shapes.
    """
    copied = []
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"layer {layer.name!r} of model {target.name!r} is not in the source model "
                             f"{source.name!r}; it must be the same architecture (layers with weights: "
                             f"{[lay.name for lay in target.layers if lay.weights]})") from None
        shapes = [tuple(w.shape) for w in other.weights], [tuple(w.shape) for w in layer.weights]
        if shapes[0] != shapes[1]:
            raise ValueError(f"layer {layer.name!r}: the source model's weights have shapes {shapes[0]}, the "
                             f"target model needs {shapes[1]}")
        layer.set_weights(other.get_weights())
        copied.append(layer.name)
    return copied
