"""Google Speech Commands v0.02 with the 12 MLCommons Tiny KWS labels: loaders and a speaker-disjoint split.

Two layouts are read, both offline:

* the full dataset (``<word>/<speaker>_nohash_<n>.wav`` for 35 words, ``testing_list.txt``,
  ``validation_list.txt``, ``_background_noise_/``): the 10 keywords keep their label, the other words become
  ``_unknown_``, and ``_silence_`` clips are cut from the background-noise recordings;
* the canonical 12-label test set (``<label>/*.wav`` with ``_silence_`` and ``_unknown_`` folders, the
  ``_unknown_`` files named ``<word>_<speaker>_nohash_<n>.wav.wav`` as published), e.g. ``test_set_v0.02``.

Every clip is read strictly (truncated files and other sample rates are errors unless ``resample=True``) and
padded/trimmed to 1 s at 16 kHz. ``speaker_disjoint_split`` splits clips so that no speaker is in two parts, either
with the dataset's own hash rule (``which_set``) or with a seeded shuffle of speakers.

Example (the project's shared folder, ``../shared/data`` beside a checkout, holds part of the test set):

>>> from qrobust_keras.data import load_speech_commands
>>> x, y = load_speech_commands("~/data/speech_commands_v0.02", split="train")  # doctest: +SKIP
>>> x, y = load_speech_commands("../shared/data/speech_commands/test_set_v0.02", split="test")
>>> x.shape                                                          # MFCC features
(2936, 49, 10, 1)
>>> x_tr, y_tr = load_speech_commands("../shared/data/speech_commands", split="train", speaker_split=(0.1, 0.3))
>>> x_te, y_te = load_speech_commands("../shared/data/speech_commands", split="test", speaker_split=(0.1, 0.3))
>>> len(x_tr), len(x_te)                                             # no speaker in both
(2097, 661)
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from qrobust_keras.data.errors import DataNotFoundError
from qrobust_keras.data.wav import load_clip

__all__ = [
    "LABELS", "KEYWORDS", "SILENCE", "UNKNOWN", "SAMPLE_RATE", "CLIP_SAMPLES", "load_speech_commands",
    "list_clips", "speaker_id", "which_set", "speaker_disjoint_split", "load_background_noise",
    "add_background_noise",
]

KEYWORDS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
#: The 12 MLCommons Tiny KWS labels, in the order of the reference model's outputs.
LABELS = KEYWORDS + (SILENCE, UNKNOWN)
SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
FEATURES = ("mfcc", "waveform", "librosa")
SPLITS = ("train", "validation", "test", "all")
BACKGROUND_DIR = "_background_noise_"
_MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # constant of the dataset's own which_set rule


def speaker_id(path: str | os.PathLike) -> str:
    """Speaker of a clip: the hex id before ``_nohash_`` (``backward_0c540988_nohash_0.wav.wav`` -> ``0c540988``).

    Files without ``_nohash_`` (the ``_silence_`` clips, generated noise) have no speaker; each is its own group,
    named by its file name without the ``.wav`` suffixes.
    """
    base = os.path.basename(os.fspath(path))
    if "_nohash_" in base:
        return base.split("_nohash_")[0].rsplit("_", 1)[-1]
    while base.lower().endswith(".wav"):
        base = base[:-4]
    return f"{SILENCE}{base}"


def _hash_percentage(name: str) -> float:
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()
    return (int(digest, 16) % (_MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / _MAX_NUM_WAVS_PER_CLASS)


def which_set(path: str | os.PathLike, validation_percentage: float = 10.0,
              testing_percentage: float = 10.0) -> str:
    """The dataset's deterministic split rule (Warden 2018, arXiv:1804.03209): a SHA-1 hash of the speaker id.

    ``p = (int(sha1(speaker), 16) mod (2**27)) * 100 / (2**27 - 1)``; ``"validation"`` if ``p <
    validation_percentage``, ``"testing"`` if ``p < validation_percentage + testing_percentage``, else
    ``"training"``. All clips of a speaker land in the same set. For the full dataset layout the hashed name is the
    one the dataset's own ``which_set`` hashes; for ``_unknown_`` files of the test-set layout the word prefix is
    dropped first so that a speaker stays in one set across words.

    Args:
        path: clip file name or path.
        validation_percentage: share of speakers for validation, in percent [0, 100].
        testing_percentage: share of speakers for testing, in percent.

    Returns:
        ``"training"``, ``"validation"`` or ``"testing"``.
    """
    if validation_percentage < 0 or testing_percentage < 0 or validation_percentage + testing_percentage > 100:
        raise ValueError("validation_percentage and testing_percentage must be >= 0 with a sum <= 100; got "
                         f"{validation_percentage} and {testing_percentage}")
    percentage = _hash_percentage(speaker_id(path))
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def speaker_disjoint_split(paths, validation_fraction: float = 0.1, test_fraction: float = 0.1,
                           seed: int | None = None) -> dict[str, np.ndarray]:
    """Split clips into train/validation/test so that every speaker is in exactly one part.

    Args:
        paths: clip paths or file names (the speaker is read from the name, see :func:`speaker_id`).
        validation_fraction: wanted share of clips in validation, in [0, 1].
        test_fraction: wanted share of clips in test, in [0, 1].
        seed: ``None`` uses a salted version of the :func:`which_set` hash rule (SHA-1 of
            ``"qrobust_keras:" + speaker``): stable across machines and file lists, adding clips never moves a
            speaker. The dataset's unsalted rule cannot be used here: the canonical test set consists exactly of
            the speakers it maps to [10%, 20%), so it would put all of them into one part. An int shuffles the
            speakers with ``numpy.random.default_rng(seed)`` and fills test, then validation, with whole speakers
            until the wanted share of clips is reached (shares closer to the request on small sets).

    Returns:
        ``{"train": idx, "validation": idx, "test": idx}``: sorted int64 index arrays into ``paths``.
    """
    if not (0 <= validation_fraction <= 1 and 0 <= test_fraction <= 1 and validation_fraction + test_fraction <= 1):
        raise ValueError("validation_fraction and test_fraction must be in [0, 1] with a sum <= 1; got "
                         f"validation_fraction={validation_fraction}, test_fraction={test_fraction}")
    speakers = [speaker_id(p) for p in paths]
    parts = {"train": [], "validation": [], "test": []}
    if seed is None:
        for i, s in enumerate(speakers):
            p = _hash_percentage("qrobust_keras:" + s) / 100.0
            parts["test" if p < test_fraction else "validation" if p < test_fraction + validation_fraction
                  else "train"].append(i)
    else:
        unique, counts = np.unique(np.array(speakers, dtype=object), return_counts=True)
        order = np.random.default_rng(seed).permutation(len(unique))
        n, start, assign = len(speakers), 0, {}
        for k in order:
            if start < test_fraction * n:
                assign[unique[k]] = "test"
            elif start < (test_fraction + validation_fraction) * n:
                assign[unique[k]] = "validation"
            else:
                assign[unique[k]] = "train"
            start += counts[k]
        for i, s in enumerate(speakers):
            parts[assign[s]].append(i)
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in parts.items()}


def _label_dirs(root: pathlib.Path) -> bool:
    return root.is_dir() and ((root / SILENCE).is_dir() or (root / UNKNOWN).is_dir())


def _find_layout(data_dir: str | os.PathLike) -> tuple[str, pathlib.Path]:
    root = pathlib.Path(os.path.expanduser(os.fspath(data_dir)))
    if not root.is_dir():
        raise DataNotFoundError(
            f"data_dir={os.fspath(data_dir)!r} is not a folder. Expected either the full Speech Commands v0.02 "
            "dataset (word folders, testing_list.txt, validation_list.txt, _background_noise_/; "
            "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz) or the 12-label test set "
            "(label folders incl. _silence_/_unknown_; speech_commands_test_set_v0.02.tar.gz), unpacked there")
    has_words = any((root / w).is_dir() for w in KEYWORDS)
    if has_words and _label_dirs(root):
        return "test_set", root
    if has_words and (root / "testing_list.txt").is_file() and (root / "validation_list.txt").is_file():
        return "full", root
    children = sorted(p for p in root.iterdir() if p.is_dir() and _label_dirs(p) and any(
        (p / w).is_dir() for w in KEYWORDS))
    if len(children) == 1:
        return "test_set", children[0]
    found = sorted(p.name for p in root.iterdir())[:20]
    raise DataNotFoundError(
        f"data_dir={os.fspath(data_dir)!r} holds neither Speech Commands layout (found: {found}). Expected either "
        "the full v0.02 dataset (keyword folders down/go/... plus testing_list.txt and validation_list.txt) or the "
        "12-label test set (label folders down/.../yes, _silence_, _unknown_), or a folder holding exactly one such "
        "test set")


def list_clips(data_dir: str | os.PathLike, split: str = "test") -> tuple[list[str], np.ndarray, str]:
    """Clip paths and labels of one split, without reading audio (silence clips of the full layout excluded).

    Args:
        data_dir: either layout (see module docstring).
        split: ``"train"``, ``"validation"``, ``"test"`` (official lists) or ``"all"`` for the full layout;
            ``"test"`` or ``"all"`` (the same clips) for the test-set layout.

    Returns:
        ``(paths, labels, layout)`` with labels indexing :data:`LABELS` and layout ``"full"`` or ``"test_set"``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got split={split!r}")
    layout, root = _find_layout(data_dir)
    paths, labels = [], []
    if layout == "test_set":
        if split not in ("test", "all"):
            raise ValueError(
                f"split={split!r} needs training clips, but {str(root)!r} is the 12-label test-set layout; pass "
                "speaker_split=(validation_fraction, test_fraction) to load_speech_commands to split its clips by "
                "speaker, or use split='test'")
        for k, label in enumerate(LABELS):
            folder = root / label
            if not folder.is_dir():
                raise DataNotFoundError(f"test-set folder {str(folder)!r} is missing; the 12-label layout needs "
                                        f"one folder per label: {list(LABELS)}")
            files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".wav"))
            paths += [str(folder / f) for f in files]
            labels += [k] * len(files)
        return paths, np.array(labels, np.int64), layout
    lists = {}
    for name in ("testing", "validation"):
        with open(root / f"{name}_list.txt", encoding="utf-8") as f:
            lists[name] = {line.strip().replace("\\", "/") for line in f if line.strip()}
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    for word in words:
        label = LABELS.index(word) if word in KEYWORDS else LABELS.index(UNKNOWN)
        for f in sorted(os.listdir(root / word)):
            if not f.lower().endswith(".wav"):
                continue
            rel = f"{word}/{f}"
            part = "test" if rel in lists["testing"] else "validation" if rel in lists["validation"] else "train"
            if split in (part, "all"):
                paths.append(str(root / word / f))
                labels.append(label)
    return paths, np.array(labels, np.int64), layout


def load_background_noise(data_dir: str | os.PathLike, resample: bool = False) -> dict[str, np.ndarray]:
    """The ``_background_noise_`` recordings as float32 waveforms at 16 kHz, by file name.

    Looks in ``data_dir/_background_noise_`` and, for a test-set folder, beside it (its parent).

    Raises:
        DataNotFoundError: if no such folder with .wav files exists.
    """
    root = pathlib.Path(os.fspath(data_dir))
    for folder in (root / BACKGROUND_DIR, root.parent / BACKGROUND_DIR):
        if folder.is_dir():
            files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".wav"))
            if files:
                return {f: load_clip(folder / f, SAMPLE_RATE, None, resample) for f in files}
    raise DataNotFoundError(f"no {BACKGROUND_DIR}/ folder with .wav files in {str(root)!r} or its parent; it is "
                            "part of the full Speech Commands archive")


def add_background_noise(waveforms: np.ndarray, noise: dict[str, np.ndarray] | list[np.ndarray], *,
                         probability: float = 0.8, max_volume: float = 0.1, seed: int = 0) -> np.ndarray:
    """Mix a random 1 s noise segment into each clip, as the TF speech-commands training recipe does.

    ``x + v * n`` clipped to [-1, 1], with probability ``probability`` per clip, ``v ~ U(0, max_volume)`` and ``n``
    a random segment of a random recording (defaults: the reference's background_frequency 0.8, volume 0.1).
    """
    if not 0 <= probability <= 1 or max_volume < 0:
        raise ValueError(f"need probability in [0, 1] and max_volume >= 0; got {probability}, {max_volume}")
    recordings = list(noise.values()) if isinstance(noise, dict) else list(noise)
    x = np.array(waveforms, np.float32, copy=True)
    n = x.shape[-1]
    recordings = [r for r in recordings if len(r) >= n]
    if not recordings:
        raise ValueError(f"noise needs at least one recording of >= {n} samples")
    rng = np.random.default_rng(seed)
    for i in range(len(x)):
        if rng.uniform() < probability:
            rec = recordings[rng.integers(len(recordings))]
            start = rng.integers(0, len(rec) - n + 1)
            x[i] = x[i] + rng.uniform(0, max_volume) * rec[start:start + n]
    return np.clip(x, -1.0, 1.0)


def _silence_clips(noise: dict[str, np.ndarray], count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` 1 s segments of the noise recordings, each scaled to a peak drawn from U(0, 1)."""
    rng = np.random.default_rng(seed)
    names = sorted(noise)
    clips, tags = np.zeros((count, CLIP_SAMPLES), np.float32), []
    for i in range(count):
        name = names[rng.integers(len(names))]
        rec = noise[name]
        start = int(rng.integers(0, len(rec) - CLIP_SAMPLES + 1))
        seg = rec[start:start + CLIP_SAMPLES]
        peak = float(np.abs(seg).max())
        clips[i] = seg * (rng.uniform() / peak if peak > 0 else 0.0)
        tags.append(f"{BACKGROUND_DIR}/{name}@{start}")
    return clips, tags


def _read_all(paths: list[str], resample: bool, verbose: int, transform=None, chunk: int = 4096) -> np.ndarray:
    """Read clips in parallel; with ``transform`` (e.g. MFCC), apply it chunk by chunk to bound memory."""
    from qrobust_keras._keras import keras

    bar = keras.utils.Progbar(len(paths), verbose=1, unit_name="clip") if verbose and len(paths) > 500 else None
    parts, buffer = [], np.zeros((min(chunk, len(paths)), CLIP_SAMPLES), np.float32)

    def one(args):
        row, i = args
        buffer[row] = load_clip(paths[i], SAMPLE_RATE, CLIP_SAMPLES, resample)

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        for start in range(0, len(paths), chunk):
            stop = min(start + chunk, len(paths))
            list(pool.map(one, enumerate(range(start, stop)), chunksize=64))
            block = buffer[: stop - start]
            parts.append(transform(block) if transform is not None else block.copy())
            if bar is not None:
                bar.update(stop)
    if not parts:
        return transform(np.zeros((0, CLIP_SAMPLES), np.float32)) if transform else np.zeros((0, CLIP_SAMPLES),
                                                                                             np.float32)
    return np.concatenate(parts)


def load_speech_commands(data_dir: str | os.PathLike, split: str = "test", features: str = "mfcc", *,
                         speaker_split: tuple[float, float] | None = None, seed: int | None = None,
                         silence_fraction: float = 0.1, unknown_fraction: float | None = None,
                         resample: bool = False, return_paths: bool = False, verbose: int = 0):
    """Speech Commands clips with the 12 MLCommons labels, as MFCC features or waveforms.

    Args:
        data_dir: the full dataset folder, the 12-label test-set folder, or a folder holding one test set (e.g.
            ``shared/data/speech_commands``, which holds ``test_set_v0.02``).
        split: ``"train"``, ``"validation"``, ``"test"`` or ``"all"``. Without ``speaker_split``: the official lists
            of the full layout; the whole test set for the test-set layout (``"test"``/``"all"``).
        features: ``"mfcc"`` (:func:`qrobust_keras.data.mfcc`, the MLCommons reference features, ``(N, 49, 10,
            1)``), ``"waveform"`` (float32 ``(N, 16000)`` in [-1, 1), int16 / 32768) or ``"librosa"``
            (:func:`qrobust_keras.data.librosa_mfcc`, not compatible with the reference weights).
        speaker_split: ``(validation_fraction, test_fraction)``: ignore the official lists and split all clips of
            either layout by speaker with :func:`speaker_disjoint_split`; ``split`` then picks a part.
        seed: for ``speaker_split`` (``None``: the hash rule) and for the silence/unknown sampling of the full
            layout (``None`` means 0 there).
        silence_fraction: full layout only: ``_silence_`` clips generated from ``_background_noise_``, as a share of
            the split's keyword clips (10% as in the TF reference recipe).
        unknown_fraction: full layout only: keep this share (relative to the keyword clips) of the non-keyword
            clips, drawn at random; ``None`` keeps all of them (what the MLCommons reference trained on).
        resample: resample clips that are not at 16 kHz instead of raising.
        return_paths: also return the clip paths (generated silence is named ``_background_noise_/<file>@<start>``).
        verbose: 1 shows a progress bar for large folders.

    Returns:
        ``(x, y)`` or ``(x, y, paths)``; ``y`` is int64 indexing :data:`LABELS`.

    Raises:
        DataNotFoundError: missing folder or unrecognized layout.
        WavFormatError: a truncated/corrupt clip, or one not at 16 kHz when ``resample`` is False (the message names
            the file).
        ValueError: unknown ``split``/``features`` or invalid fractions.
    """
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}; got features={features!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got split={split!r}")
    for name, value in (("silence_fraction", silence_fraction), ("unknown_fraction", unknown_fraction)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0; got {name}={value}")
    layout, root = _find_layout(data_dir)
    paths, labels, _ = list_clips(root, "all" if speaker_split is not None else split)
    if speaker_split is not None:
        if len(speaker_split) != 2:
            raise ValueError(f"speaker_split must be (validation_fraction, test_fraction); got {speaker_split!r}")
        if split != "all":
            idx = speaker_disjoint_split(paths, speaker_split[0], speaker_split[1], seed)[split]
            paths, labels = [paths[i] for i in idx], labels[idx]
    rng = np.random.default_rng(0 if seed is None else seed)
    waves_extra, tags_extra = np.zeros((0, CLIP_SAMPLES), np.float32), []
    if layout == "full":
        is_kw = labels < len(KEYWORDS)
        if unknown_fraction is not None:
            unknown = np.flatnonzero(~is_kw)
            keep = min(len(unknown), int(np.ceil(unknown_fraction * is_kw.sum())))
            chosen = np.sort(rng.choice(unknown, size=keep, replace=False))
            sel = np.sort(np.concatenate([np.flatnonzero(is_kw), chosen]))
            paths, labels = [paths[i] for i in sel], labels[sel]
        n_silence = int(np.ceil(silence_fraction * is_kw.sum()))
        if n_silence:
            waves_extra, tags_extra = _silence_clips(load_background_noise(root, resample), n_silence,
                                                     int(rng.integers(2**31)) + SPLITS.index(split))
    transform = None
    if features != "waveform":
        from qrobust_keras.data.mfcc import mfcc

        transform = functools.partial(mfcc, backend="tf" if features == "mfcc" else "librosa")

    x = _read_all(paths, resample, verbose, transform)
    if len(tags_extra):
        x = np.concatenate([x, transform(waves_extra) if transform else waves_extra])
        labels = np.concatenate([labels, np.full(len(tags_extra), LABELS.index(SILENCE), np.int64)])
        paths = paths + tags_extra
    return (x, labels, paths) if return_paths else (x, labels)

