"""The evaluation sets of the zoo's cards: which samples every entry of a dataset is measured on, the int8
calibration inputs, and the words the card uses for both.

- CIFAR-10: the 1,017 exact test images of the shared copy (``test_batch``, in file order); calibration: the first
  500 images of ``data_batch_1``.
- Speech Commands: the test part of the speaker-disjoint split (70/10/20 by speaker, seed 0,
  :func:`~qrobust_keras.data.speaker_disjoint_split`) of the clips found, the split ``qrobust train --dataset
  speech_commands`` trains on, so no test speaker was heard in training. Each clip is given twice: as the
  MLCommons MFCC features the DS-CNN takes (``(49, 10, 1)``, attacked in MFCC units) and as the 1 s waveform folded
  to ``(125, 128)`` (attacked in waveform units, full scale 1, through the differentiable front end,
  :func:`~qrobust_keras.data.waveform_model`). Calibration: the first 500 training clips' MFCCs.

Example:

>>> from qrobust_keras.zoo.eval_sets import EVAL_SETS
>>> sorted(EVAL_SETS)
['cifar10', 'speech_commands']
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

__all__ = ["EvalSet", "EVAL_SETS", "load_eval_set"]


@dataclasses.dataclass
class EvalSet:
    """What a card is measured on.

    Attributes:
        data: ``(x, y)``: the model's inputs and integer labels.
        calibration: int8 calibration inputs (never from the evaluation samples).
        description: the card's ``eval_set`` text. input: the card's ``input`` text.
        waveform: ``(x, y)`` of the same samples as folded waveforms (audio only), or None.
    """

    data: tuple[np.ndarray, np.ndarray]
    calibration: np.ndarray
    description: str
    input: str
    waveform: tuple[np.ndarray, np.ndarray] | None = None


EVAL_SETS = {
    "cifar10": ("the 1,017 exact CIFAR-10 test images of shared/data (test_batch), in file order",
                "float32 (32, 32, 3) RGB in [0, 1] (uint8 pixels / 255)"),
    "speech_commands": ("the test part (20%, by speaker) of the speaker-disjoint 70/10/20 split (seed 0) of the "
                        "Speech Commands v0.02 clips of shared/data: the split `qrobust train` trains on",
                        "float32 (49, 10, 1) MLCommons MFCC features (waveform budgets: the 1 s waveform, full "
                        "scale 1, folded to (125, 128), through the differentiable MFCC front end)"),
}


def load_eval_set(dataset: str, folder: str) -> EvalSet:
    """The evaluation set of ``dataset`` read from ``folder`` (CIFAR-10 python batches; the Speech Commands folder).

    Raises:
        ValueError: a dataset without an evaluation set here.
        qrobust_keras.data.DataNotFoundError: nothing of the dataset in ``folder``.
    """
    from qrobust_keras import data as qdata

    if dataset not in EVAL_SETS:
        raise ValueError(f"dataset must be one of {sorted(EVAL_SETS)}; got dataset={dataset!r}")
    description, input_text = EVAL_SETS[dataset]
    if dataset == "cifar10":
        _, path = qdata.find_cifar10(folder, source="pickle")
        x, y = qdata.read_pickle_batch(os.path.join(path, "test_batch"))
        calib, _ = qdata.read_pickle_batch(os.path.join(path, "data_batch_1"))
        return EvalSet((x.astype(np.float32) / 255.0, y), calib[:500].astype(np.float32) / 255.0, description,
                       input_text)
    # the clips are read once; their MFCCs are those load_speech_commands(features="mfcc") computes (same function)
    waves, labels, paths = qdata.load_speech_commands(folder, split="all", features="waveform", return_paths=True,
                                                      verbose=0)
    feats = qdata.mfcc(waves)
    parts = qdata.speaker_disjoint_split(paths, validation_fraction=0.1, test_fraction=0.2, seed=0)
    test, train = parts["test"], parts["train"]
    folded = waves[test].reshape(-1, *qdata.WAVEFORM_FOLD).astype(np.float32)
    return EvalSet((feats[test].astype(np.float32), labels[test]), feats[train][:500].astype(np.float32),
                   description, input_text, waveform=(folded, labels[test]))
