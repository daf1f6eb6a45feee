"""Tests of qrobust_keras/models/summary.py: bits, parameters and packed bytes per layer."""

import math

import qrobust_keras as qrk


def test_float_model_packs_at_32_bits():
    info = qrk.models.summary(qrk.models.resnet8(policy="float"), print_fn=None)
    assert info.total_params == 78_666
    assert info.packed_bytes == info.float32_bytes == 4 * 78_666


def test_ternary_kernels_pack_at_2_bits_and_int8_biases_at_8():
    model = qrk.models.resnet8(policy=qrk.quantization.QuantPolicy(kernel="ternary", activation="int4"))
    info = qrk.models.summary(model, print_fn=None)
    row = {r.name: r for r in info.layers}["stack3_conv_b"]
    assert row.kernel_bits == 2 and row.params == 3 * 3 * 64 * 64 + 64
    assert row.packed_bytes == math.ceil(3 * 3 * 64 * 64 * 2 / 8) + 64
    assert {r.name: r for r in info.layers}["stack1_relu"].kernel_bits == 4
    assert info.compression > 10


def test_text_and_markdown_and_dict():
    lines = []
    info = qrk.models.summary(qrk.models.ds_cnn(policy="int8"), print_fn=lines.append)
    assert "block4_pw" in lines[0] and "Packed weights" in lines[0]
    assert info.to_markdown().count("\n|") >= len(info.layers)
    assert info.as_dict()["total_params"] == 24_908
