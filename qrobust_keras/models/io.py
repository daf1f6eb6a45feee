"""Loading saved models of the library (.h5, SavedModel, .keras) with every custom object registered, and copying
weights between two builds of one architecture (e.g. float weights into a quantized model).

A file that is not the format its name promises (truncated, corrupt, or another format) and the official MLCommons
ResNet-8 file (0-255 pixels; :func:`~qrobust_keras.models.load_mlcommons` loads it) raise :class:`ModelFileError`,
naming the path.

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
import zipfile

import numpy as np

from qrobust_keras._keras import keras, qkeras_custom_objects, tf

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # at offset 0, or 512, 1024, 2048, ... after a user block
ZIP_SIGNATURE = b"PK\x03\x04"          # a .keras file is a zip archive holding config.json and the weights
# The first BatchNormalization of a ResNet-8 fed 0-255 pixels sees 255**2 = 65,025 times the variance it sees on
# [0, 1] images: about 1 on [0, 1] (He-normal conv_1), 2,640 (mean) in the official MLCommons file.
_PIXEL_255_VARIANCE = 100.0


class ModelFileError(ValueError):
    """A model file or folder exists but cannot be loaded as given: it is not the format its name promises
    (truncated or corrupt), or it is the official MLCommons ResNet-8, which needs
    :func:`~qrobust_keras.models.load_mlcommons` (its weights expect 0-255 pixels)."""


def custom_objects() -> dict:
    """QKeras layers/quantizers plus every Keras object the library registered (package ``qrobust_keras``)."""
    objects = qkeras_custom_objects()
    for key, obj in keras.saving.get_custom_objects().items():
        objects[key] = obj
        package, _, bare = key.partition(">")
        if package == "qrobust_keras":  # legacy .h5 files store the bare class name (MixedPrecisionEnsemble)
            objects.setdefault(bare, obj)
    return objects


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """Load a model saved as .h5, .keras or a SavedModel folder, with QKeras and qrobust_keras objects registered.

    Before Keras reads it, the file's first bytes are checked against its suffix: ``.h5``/``.hdf5`` must carry the
    HDF5 signature, ``.keras`` must be a complete zip archive holding ``config.json`` (an HDF5 file named ``.keras``
    is also read, as Keras does). Read errors of Keras, h5py and TensorFlow (a truncated file, a corrupt
    ``saved_model.pb`` or ``variables/``) become :class:`ModelFileError` naming the path. A model that is the official
    MLCommons Tiny ResNet-8 (its weighted layers, Keras's default names instead of the library's, and a first
    BatchNormalization whose statistics show 0-255 pixels) is refused: every model of the library takes [0, 1] images,
    so it would run silently wrong.

    Args:
        path: file (``.h5``/``.hdf5``/``.keras``) or SavedModel directory.
        compile: whether to restore the training configuration (optimizer, loss) when the file has one.

    Returns:
        The loaded ``tf_keras`` model.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is neither a file of a known suffix nor a SavedModel directory.
        ModelFileError: (a ValueError) the file is truncated, corrupt or not the format its suffix names, or it is
            the official MLCommons ResNet-8 (load it with :func:`~qrobust_keras.models.load_mlcommons`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"path={path!r} does not exist; expected a .h5, .keras file or a SavedModel folder")
    is_dir = os.path.isdir(path)
    if is_dir and not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"path={path!r} is a folder without saved_model.pb; expected a SavedModel folder")
    if not is_dir and not path.lower().endswith((".h5", ".hdf5", ".keras")):
        raise ValueError(f"path={path!r} has an unknown suffix; accepted: .h5, .hdf5, .keras or a SavedModel folder")
    expected = _check_file_format(path)
    import qrobust_keras

    qrobust_keras.import_all()  # registers every custom layer and quantizer of the library

    readable = (OSError, zipfile.BadZipFile) + ((tf.errors.OpError, IndexError) if is_dir else ())
    try:  # IndexError: TensorFlow's "Read less bytes than requested" of a truncated variables/ shard
        with keras.utils.custom_object_scope(custom_objects()):
            model = keras.models.load_model(path, compile=compile)
    except readable as exc:
        raise ModelFileError(f"path={path!r} could not be read as {expected} ({type(exc).__name__}: "
                             f"{str(exc).strip()}); it looks truncated or corrupt") from exc
    _refuse_mlcommons_reference(model, path)
    return model


def _check_file_format(path: str) -> str:
    """The format ``path`` must hold (for messages), after checking a file's signature; raises ModelFileError."""
    if os.path.isdir(path):
        return "a SavedModel folder"
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        starts_as_zip = head.startswith(ZIP_SIGNATURE)
        user_block = 512  # HDF5 allows its signature after a user block of 512, 1024, 2048, ... bytes
        while head != HDF5_SIGNATURE and user_block + 8 <= size:
            f.seek(user_block)
            head = f.read(8)
            user_block *= 2
    is_hdf5 = head == HDF5_SIGNATURE
    hint = ("it looks truncated or corrupt (an empty file: the save never ran or was interrupted)" if size == 0
            else "it looks truncated or corrupt")
    if not path.lower().endswith(".keras"):
        if starts_as_zip:
            raise ModelFileError(f"path={path!r} is a zip archive, not an HDF5 file: a model saved in the .keras "
                                 "format under another suffix; rename it to .keras")
        if not is_hdf5:
            raise ModelFileError(f"path={path!r} is not an HDF5 file ({size:,} bytes without the HDF5 signature); "
                                 f"{hint}. A .h5/.hdf5 model is the HDF5 file model.save('model.h5') writes")
        return "an HDF5 model file"
    if is_hdf5:  # an HDF5 file named .keras: Keras reads it as HDF5
        return "an HDF5 model file"
    if not starts_as_zip:
        raise ModelFileError(f"path={path!r} is not a zip archive ({size:,} bytes without the zip signature); {hint}. "
                             "A .keras model is the zip archive model.save('model.keras') writes")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"path={path!r} starts as a zip archive but its end (the central directory) is missing "
                             f"({size:,} bytes); it looks truncated. A .keras model is the zip archive "
                             "model.save('model.keras') writes")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if "config.json" not in names:
        raise ModelFileError(f"path={path!r} is a zip archive without config.json (it holds {names[:5]}); not a "
                             "Keras model archive. A .keras model is the zip archive model.save('model.keras') writes")
    return "a .keras zip archive"


def _refuse_mlcommons_reference(model: keras.Model, path: str) -> None:
    """Raise ModelFileError when ``model`` is the official MLCommons Tiny ResNet-8, whose weights expect 0-255 pixels.

    Checked: the weighted layers are those :func:`~qrobust_keras.models.load_mlcommons` copies (9 Conv2D, 7
    BatchNormalization, 1 Dense), none carries the library's names (the library's ResNet-8 ends in ``logits``), there
    is no ``Rescaling`` layer, and the first BatchNormalization's moving variance is 0-255-pixel sized. The DS-CNN
    reference (``kws_ref_model``) is not refused: it takes the library's MFCC features as they are.
    """
    from qrobust_keras.models.resnet import RESNET8_WEIGHT_ORDER

    layers = list(model.layers)
    weighted = [type(layer).__name__ for layer in layers if layer.weights]
    counts = {name: weighted.count(name) for name in set(weighted)}
    if counts != {name: len(ours) for name, ours in RESNET8_WEIGHT_ORDER.items()}:
        return
    if any(layer.name == "logits" or isinstance(layer, keras.layers.Rescaling) for layer in layers):
        return
    first_bn = next(layer for layer in layers if type(layer).__name__ == "BatchNormalization")
    variance = float(np.mean(first_bn.moving_variance.numpy()))
    if variance < _PIXEL_255_VARIANCE:
        return
    # load_mlcommons takes the official file itself or the folder holding it under its official name
    where = os.path.abspath(path)
    if os.path.basename(where) == "pretrainedResnet.h5":
        where = os.path.dirname(where)
    raise ModelFileError(
        f"path={path!r} is the official MLCommons Tiny ResNet-8: its weights expect 0-255 pixels (the moving variance "
        f"of its first BatchNormalization, {variance:,.0f}, is that of 0-255 inputs) while every qrobust_keras model "
        "takes [0, 1] images, so it would run silently wrong. Load it with "
        f"qrk.models.load_mlcommons('resnet8', {where!r}) (adds Rescaling(255); save that model to evaluate or export "
        f"it), or train from its weights with --init-weights mlcommons:{where}")


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
