"""Fixtures shared by the data tests: the real Speech Commands test clips, loaded once per session."""

import pytest

from qrobust_keras.data.speech_commands import load_speech_commands


@pytest.fixture(scope="session")
def kws_test_set(shared_data):
    """Waveforms, labels and paths of the 2,936 shared canonical test clips (float32, 16000 samples each)."""
    return load_speech_commands(shared_data / "speech_commands" / "test_set_v0.02", split="test",
                                features="waveform", return_paths=True)


@pytest.fixture(scope="session")
def kws_reference_model(shared_data):
    """The MLCommons Tiny DS-CNN reference weights in the library's builder (49x10x1 MFCC in, softmax out)."""
    from qrobust_keras.models import load_mlcommons

    return load_mlcommons("ds_cnn", shared_data / "models" / "mlcommons" / "kws_ref_model")
