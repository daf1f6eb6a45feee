"""Tests of qrobust_keras/data/wav.py: exact PCM decoding, truncated/corrupt files, sample-rate handling."""

import wave

import numpy as np
import pytest
import scipy.io.wavfile
from scipy.signal import resample_poly

from qrobust_keras.data.errors import WavFormatError
from qrobust_keras.data.wav import fit_length, load_clip, read_wav


def _write_pcm16(path, samples, rate=16000, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())


def test_real_clip_equals_scipy(shared_data):
    path = shared_data / "speech_commands" / "test_set_v0.02" / "yes" / "022cd682_nohash_0.wav"
    x, rate = read_wav(path)
    ref_rate, ref = scipy.io.wavfile.read(path)
    assert rate == ref_rate == 16000 and x.dtype == np.float32
    np.testing.assert_array_equal(x, ref.astype(np.float32) / 32768)


def test_skips_extra_chunks_like_background_noise(shared_data):
    path = shared_data / "speech_commands" / "_background_noise_" / "doing_the_dishes.wav"  # has a LIST chunk
    x, rate = read_wav(path)
    with pytest.warns(scipy.io.wavfile.WavFileWarning):
        ref = scipy.io.wavfile.read(path)[1]
    np.testing.assert_array_equal(x, ref / np.float32(32768))


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8])
def test_other_encodings_equal_scipy(tmp_path, dtype):
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        data, scale, offset = rng.uniform(-1, 1, 500).astype(np.float32), 1.0, 0.0
    elif dtype == np.int32:
        data, scale, offset = rng.integers(-2**31, 2**31 - 1, 500, dtype=np.int32), 2.0**31, 0.0
    else:
        data, scale, offset = rng.integers(0, 256, 500, dtype=np.uint8), 128.0, 128.0
    scipy.io.wavfile.write(tmp_path / "a.wav", 8000, data)
    x, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000
    np.testing.assert_allclose(x, (data.astype(np.float64) - offset) / scale, rtol=0, atol=1e-7)


def test_truncated_wav_is_an_error(tmp_path, shared_data):
    raw = (shared_data / "speech_commands" / "test_set_v0.02" / "no" / "0c40e715_nohash_0.wav").read_bytes()
    for n, pattern in [(20000, "truncated: its data chunk declares 32000 bytes but only 19956"),
                       (30, "truncated"), (10, "not a RIFF/WAVE")]:
        (tmp_path / "t.wav").write_bytes(raw[:n])
        with pytest.raises(WavFormatError, match=pattern):
            read_wav(tmp_path / "t.wav")


def test_odd_byte_count_and_garbage(tmp_path):
    _write_pcm16(tmp_path / "a.wav", np.arange(100))
    raw = bytearray((tmp_path / "a.wav").read_bytes())
    raw[40:44] = (199).to_bytes(4, "little")  # data size not a whole number of 2-byte frames
    (tmp_path / "b.wav").write_bytes(bytes(raw[:44 + 199]))
    with pytest.raises(WavFormatError, match="whole number"):
        read_wav(tmp_path / "b.wav")
    (tmp_path / "c.wav").write_bytes(b"ID3\x04" + bytes(100))
    with pytest.raises(WavFormatError, match="not a RIFF/WAVE"):
        read_wav(tmp_path / "c.wav")


def test_8khz_is_refused_unless_resampling(tmp_path):
    t = np.arange(8000) / 8000
    tone = (10000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    _write_pcm16(tmp_path / "low.wav", tone, rate=8000)
    with pytest.raises(WavFormatError, match=r"8000 Hz; expected 16000 Hz. Pass resample=True"):
        load_clip(tmp_path / "low.wav")
    x = load_clip(tmp_path / "low.wav", resample_audio=True)
    assert x.shape == (16000,)
    np.testing.assert_allclose(x, resample_poly(tone / 32768, 2, 1).astype(np.float32), atol=1e-6)
    # a 440 Hz tone stays a 440 Hz tone: the spectral peak of the resampled clip is at 440 Hz
    assert abs(np.argmax(np.abs(np.fft.rfft(x))) * 16000 / len(x) - 440) <= 1


def test_stereo_is_refused_for_clips(tmp_path):
    _write_pcm16(tmp_path / "st.wav", np.zeros(3200, np.int16), channels=2)
    x, _ = read_wav(tmp_path / "st.wav")
    assert x.shape == (1600, 2)
    with pytest.raises(WavFormatError, match="2 channels; expected a mono clip"):
        load_clip(tmp_path / "st.wav")


def test_fit_length_pads_end_and_trims():
    x = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 4), [1, 2, 3, 4])
    np.testing.assert_array_equal(fit_length(x, 12), list(range(1, 11)) + [0, 0])
    assert fit_length(np.ones((3, 5)), 8).shape == (3, 8)
