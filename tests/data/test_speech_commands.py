"""Tests of qrobust_keras/data/speech_commands.py on the shared test set and a small full-layout copy."""

import shutil
import wave

import numpy as np
import pytest

from qrobust_keras.data.errors import DataNotFoundError, WavFormatError
from qrobust_keras.data.speech_commands import (
    LABELS, add_background_noise, list_clips, load_speech_commands, speaker_disjoint_split, speaker_id, which_set,
)

SHARED_COUNTS = [250, 241, 251, 240, 239, 237, 230, 252, 257, 253, 239, 247]  # down ... yes, _silence_, _unknown_


def test_label_order_is_mlcommons():
    assert LABELS == ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "_silence_", "_unknown_")


def test_shared_test_set(kws_test_set, shared_data):
    x, y, paths = kws_test_set
    assert x.shape == (2936, 16000) and x.dtype == np.float32 and np.abs(x).max() <= 1
    assert np.bincount(y).tolist() == SHARED_COUNTS
    unknown = [p for p, label in zip(paths, y) if label == 11]
    assert all(p.endswith(".wav.wav") for p in unknown) and len(unknown) == 247
    assert all(f"/{LABELS[label]}/" in p for p, label in zip(paths, y))
    # the parent folder (holding test_set_v0.02 beside the lists) resolves to the same clips
    x2, y2 = load_speech_commands(shared_data / "speech_commands", features="waveform")
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(x2[::97], x[::97])


def test_speaker_id():
    assert speaker_id("yes/0c40e715_nohash_3.wav") == "0c40e715"
    assert speaker_id("_unknown_/backward_0c540988_nohash_0.wav.wav") == "0c540988"
    assert speaker_id("_silence_/1024.wav") == "_silence_1024"


def test_which_set_reproduces_the_canonical_test_speakers(kws_test_set):
    """The canonical test set is, by construction, the speakers the dataset's rule sends to "testing"."""
    _, y, paths = kws_test_set
    sets = [which_set(p) for p, label in zip(paths, y) if label != LABELS.index("_silence_")]
    assert len(sets) == 2936 - 239 and set(sets) == {"testing"}
    assert which_set("yes/0c40e715_nohash_0.wav", 100, 0) == "validation"


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_speaker_disjoint_split(kws_test_set, seed):
    _, y, paths = kws_test_set
    parts = speaker_disjoint_split(paths, validation_fraction=0.1, test_fraction=0.3, seed=seed)
    speakers = {k: {speaker_id(paths[i]) for i in idx} for k, idx in parts.items()}
    assert not speakers["train"] & speakers["test"]
    assert not speakers["train"] & speakers["validation"]
    assert not speakers["validation"] & speakers["test"]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(paths)))
    shares = {k: len(v) / len(paths) for k, v in parts.items()}
    assert abs(shares["test"] - 0.3) < 0.1 and abs(shares["validation"] - 0.1) < 0.06, shares
    for k in parts:  # every label is present in every part
        assert np.bincount(y[parts[k]], minlength=12).min() > 0
    again = speaker_disjoint_split(list(paths), 0.1, 0.3, seed=seed)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_seeds_give_different_splits(kws_test_set):
    paths = kws_test_set[2]
    a = speaker_disjoint_split(paths, 0.1, 0.3, seed=0)["test"]
    b = speaker_disjoint_split(paths, 0.1, 0.3, seed=1)["test"]
    assert not np.array_equal(a, b)


def test_speaker_split_through_the_loader(shared_data, kws_test_set):
    root = shared_data / "speech_commands" / "test_set_v0.02"
    x, y, paths = kws_test_set
    got = {s: load_speech_commands(root, s, "waveform", speaker_split=(0.1, 0.3), seed=0, return_paths=True)
           for s in ("train", "validation", "test")}
    assert sum(len(v[1]) for v in got.values()) == len(y)
    index = {p: i for i, p in enumerate(paths)}
    for xs, ys, ps in got.values():
        rows = [index[p] for p in ps]
        np.testing.assert_array_equal(ys, y[rows])
        np.testing.assert_array_equal(xs[:5], x[rows[:5]])
    with pytest.raises(ValueError, match="speaker_split"):
        load_speech_commands(root, "train")


def _copy_clip(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


@pytest.fixture()
def full_layout(tmp_path, shared_data):
    """A miniature full dataset: 3 keywords + 2 other words, official lists, background noise."""
    src = shared_data / "speech_commands" / "test_set_v0.02"
    root = tmp_path / "speech_commands_v0.02"
    layout = {}
    for word in ("yes", "no", "up"):
        for f in sorted((src / word).iterdir())[:6]:
            _copy_clip(f, root / word / f.name)
            layout[f"{word}/{f.name}"] = LABELS.index(word)
    for f in sorted((src / "_unknown_").iterdir())[:40]:
        word, rest = f.name.split("_", 1)
        if word in ("bed", "cat"):
            _copy_clip(f, root / word / rest[: -len(".wav")])
            layout[f"{word}/{rest[:-len('.wav')]}"] = LABELS.index("_unknown_")
    names = sorted(layout)
    (root / "testing_list.txt").write_text("\n".join(names[0::4]) + "\n")
    (root / "validation_list.txt").write_text("\n".join(names[1::4]) + "\n")
    noise = shared_data / "speech_commands" / "_background_noise_"
    for name in ("white_noise.wav", "running_tap.wav"):
        _copy_clip(noise / name, root / "_background_noise_" / name)
    return root, layout, names


def test_full_layout_official_lists(full_layout):
    root, layout, names = full_layout
    expected = {"test": set(names[0::4]), "validation": set(names[1::4]),
                "train": set(names) - set(names[0::4]) - set(names[1::4])}
    for split, members in expected.items():
        paths, labels, kind = list_clips(root, split)
        assert kind == "full"
        rel = ["/".join(p.split("/")[-2:]) for p in paths]
        assert set(rel) == members
        assert [layout[r] for r in rel] == labels.tolist()
    assert any(layout[n] == 11 for n in names) and {"bed", "cat"} & {n.split("/")[0] for n in names}


def test_full_layout_silence_and_unknown_sampling(full_layout):
    root, layout, names = full_layout
    x, y, paths = load_speech_commands(root, "all", "waveform", silence_fraction=0.5, return_paths=True)
    n_kw = sum(v < 10 for v in layout.values())
    n_unknown = sum(v == 11 for v in layout.values())
    assert np.bincount(y, minlength=12)[10] == int(np.ceil(0.5 * n_kw)) and np.bincount(y)[11] == n_unknown
    silence = x[y == 10]
    assert np.all(np.abs(silence).max(axis=1) <= 1) and np.all(np.abs(silence).max(axis=1) > 0)
    assert all(p.startswith("_background_noise_/") for p, label in zip(paths, y) if label == 10)
    x2, y2 = load_speech_commands(root, "all", "waveform", silence_fraction=0.5)
    np.testing.assert_array_equal(x2, x)  # deterministic (seed None means 0)
    _, y3 = load_speech_commands(root, "all", "waveform", silence_fraction=0.0, unknown_fraction=0.25)
    assert np.bincount(y3, minlength=12)[11] == int(np.ceil(0.25 * n_kw)) and np.bincount(y3, minlength=12)[10] == 0


def test_mfcc_features_by_default(full_layout):
    from qrobust_keras.data.mfcc import mfcc
    from qrobust_keras.data.speech_commands import _read_all

    root, _, _ = full_layout
    x, y = load_speech_commands(root, "all", silence_fraction=0.2)
    assert x.shape == (len(y), 49, 10, 1) and x.dtype == np.float32 and np.isfinite(x).all()
    waves, y2, paths = load_speech_commands(root, "all", "waveform", silence_fraction=0.2, return_paths=True)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_allclose(x, mfcc(waves), rtol=0, atol=1e-4)  # features of exactly those clips, silence too
    clips = [p for p in paths if not p.startswith("_background_noise_")]
    np.testing.assert_allclose(_read_all(clips, False, 0, mfcc, chunk=3), mfcc(waves[: len(clips)]), atol=1e-4)


def test_missing_folder_and_unknown_layout(tmp_path):
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        load_speech_commands(tmp_path / "nowhere")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataNotFoundError, match="neither Speech Commands layout"):
        load_speech_commands(tmp_path)


def test_bad_wavs_name_the_file(full_layout):
    root, _, _ = full_layout
    bad = root / "yes" / "ffffffff_nohash_0.wav"
    with wave.open(str(bad), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, "<i2").tobytes())
    with pytest.raises(WavFormatError, match=r"ffffffff_nohash_0.wav' is sampled at 8000 Hz"):
        load_speech_commands(root, "all", "waveform")
    x, y, paths = load_speech_commands(root, "all", "waveform", resample=True, return_paths=True)
    assert x[paths.index(str(bad))].shape == (16000,)
    raw = bad.read_bytes()
    bad.write_bytes(raw[:1000])
    with pytest.raises(WavFormatError, match=r"ffffffff_nohash_0.wav' is truncated"):
        load_speech_commands(root, "all", "waveform", resample=True)


def test_add_background_noise(full_layout):
    from qrobust_keras.data.speech_commands import load_background_noise

    root, _, _ = full_layout
    noise = load_background_noise(root)
    assert sorted(noise) == ["running_tap.wav", "white_noise.wav"]
    clean = np.zeros((50, 16000), np.float32)
    noisy = add_background_noise(clean, noise, probability=0.5, max_volume=0.1, seed=3)
    touched = np.abs(noisy).max(axis=1) > 0
    assert 10 < touched.sum() < 40
    peak = max(np.abs(v).max() for v in noise.values())
    assert np.abs(noisy).max() <= 0.1 * peak + 1e-7
    np.testing.assert_array_equal(noisy, add_background_noise(clean, noise, probability=0.5, seed=3))
