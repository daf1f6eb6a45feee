"""Tests of qrobust_keras/export/c_array.py: the generated sources compile and hold the file byte for byte."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from qrobust_keras.export import TFLiteFormatError, export_tflite, to_c_array

from .conftest import POLICIES, tiny_model


def test_c_array_compiles_and_holds_the_file(tiny_inputs, tmp_path):
    path = tmp_path / "m.tflite"
    export_tflite(tiny_model(POLICIES["ternary"]), path, tiny_inputs[:32])
    cc, h = to_c_array(path, tmp_path / "src", name="model_data")
    source, header = open(cc).read(), open(h).read()
    assert "alignas(16) const unsigned char g_model_data[]" in source
    assert "extern const unsigned int g_model_data_len;" in header
    data = path.read_bytes()
    body = source.split("{", 1)[1].split("}", 1)[0]
    parsed = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))
    assert parsed == data
    assert f"g_model_data_len = {len(data)};" in source
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    assert compiler, "a C++ compiler is needed for this test"
    obj = tmp_path / "model_data.o"
    main = tmp_path / "main.cc"
    main.write_text('#include "model_data.h"\n#include <cstdint>\n'
                    'int main() { return (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 == 0 && '
                    'g_model_data_len > 0 && g_model_data[4] == \'T\') ? 0 : 1; }\n')
    subprocess.run([compiler, "-std=c++11", "-c", cc, "-o", str(obj)], check=True)
    exe = tmp_path / "check"
    subprocess.run([compiler, "-std=c++11", "-I", str(tmp_path / "src"), str(main), str(obj), "-o", str(exe)],
                   check=True)
    assert subprocess.run([str(exe)]).returncode == 0


def test_c_array_rejects_bad_names_and_files(tmp_path):
    with pytest.raises(ValueError, match="name must be a C identifier"):
        to_c_array(b"xxxxTFL3", tmp_path, name="model-data")
    (tmp_path / "x.tflite").write_bytes(np.arange(64, dtype=np.uint8).tobytes())
    with pytest.raises(TFLiteFormatError, match="not a TFLite flatbuffer"):
        to_c_array(tmp_path / "x.tflite", tmp_path)
