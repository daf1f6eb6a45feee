"""Tests of qrobust_keras/export/tflm.py: the TFLite Micro footprint of exported ResNet-8s."""

import numpy as np

from qrobust_keras.export import MLCOMMONS_RESNET8_INT8, export_tflite, tflm_footprint
import qrobust_keras as qrk


def test_footprint_of_the_quantized_resnet8(exported_int4):
    path, info = exported_int4
    fp = tflm_footprint(path)
    assert fp.all_ops_supported and fp.unsupported == []
    assert fp.arena_verified  # an arena of exactly arena_bytes runs the file
    assert fp.flash_bytes == info.size_bytes == path.stat().st_size
    # the robust int4 ResNet-8 needs no more than the official MLCommons int8 ResNet-8
    assert 40_000 < fp.arena_bytes <= MLCOMMONS_RESNET8_INT8["arena_bytes"]
    assert fp.flash_bytes <= MLCOMMONS_RESNET8_INT8["flash_bytes"]
    assert fp.arena_head_bytes + fp.arena_tail_bytes == fp.arena_bytes
    # one byte less than the reported arena does not run: the figure is the real need (up to alignment)
    from tflite_micro.python.tflite_micro import runtime

    failed = False
    try:
        small = runtime.Interpreter.from_bytes(path.read_bytes(), arena_size=fp.arena_bytes - 64)
        small.set_input(np.zeros((1, 32, 32, 3), np.int8), 0)
        small.invoke()
    except RuntimeError:
        failed = True
    assert failed


def test_footprint_of_the_official_float_weights_exported_by_us(shared_data, cifar_small, tmp_path):
    """Like-for-like with the official int8 file: the MLCommons float weights through our exporter."""
    (x_train, _), (x_test, y_test) = cifar_small
    model = qrk.models.load_mlcommons("resnet8", shared_data / "models" / "mlcommons")
    info = export_tflite(model, tmp_path / "ref.tflite", x_train[:200], fidelity_data=(x_test[:300], y_test[:300]))
    assert info.accuracy_keras > 0.8 and info.agreement >= 0.97
    assert "input_scale" in info.folded  # Rescaling(255) folded into conv_1: no MUL op
    fp = tflm_footprint(tmp_path / "ref.tflite")
    assert fp.all_ops_supported and fp.arena_verified
    # measured: 56,080 arena bytes (one RESHAPE node more than the official graph: +96 B) and 96,232 flash bytes
    assert fp.arena_bytes <= 1.01 * MLCOMMONS_RESNET8_INT8["arena_bytes"]
    assert fp.flash_bytes <= MLCOMMONS_RESNET8_INT8["flash_bytes"]


def test_the_exporters_fidelity_numbers_are_what_tflite_micro_computes(exported_int4, cifar_small):
    """An int8 file's accuracy and agreement in ExportInfo (and so on a zoo card) come from the reference kernels,
    which TFLite Micro matches argmax for argmax on the 1,017 exact images; LiteRT's default kernels need not."""
    path, info = exported_int4
    _, (x_test, y_test) = cifar_small
    assert info.fidelity_kernels == "reference" and "TFLite Micro" in info.to_markdown()
    micro = qrk.export.TFLiteModel(path, runtime="tflm").predict(x_test).argmax(1)
    assert float(np.mean(micro == y_test)) == info.accuracy_tflite
