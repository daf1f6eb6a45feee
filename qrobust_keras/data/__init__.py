"""Datasets and audio features: CIFAR-10, SVHN and Speech Commands loaders, MFCC front ends.

Everything reads the formats users already have, offline, and says clearly what is missing or broken.

Example (the paths are the project's shared data folder beside a checkout; use your own copies):

>>> import qrobust_keras as qrk
>>> (x_train, y_train), (x_test, y_test) = qrk.data.load_cifar10("../shared/data/cifar10")   # uint8 NHWC
>>> ds = qrk.data.image_dataset(x_train, y_train, batch_size=128, training=True)   # augmented [0, 1] batches
>>> waves, y = qrk.data.load_speech_commands("../shared/data/speech_commands", features="waveform")
>>> waves.shape                                                    # 1 s clips at 16 kHz, float32 in [-1, 1)
(2936, 16000)
>>> qrk.data.mfcc(waves[:8]).shape                                 # MLCommons features (features="mfcc" above)
(8, 49, 10, 1)
"""

from qrobust_keras.data.augment import image_dataset, random_crop_flip
from qrobust_keras.data.cifar10 import CLASS_NAMES as CIFAR10_CLASSES
from qrobust_keras.data.cifar10 import download_cifar10, find_cifar10, keras_cache_dir, load_cifar10, read_pickle_batch
from qrobust_keras.data.datasets import DATASETS, DataSpec, load_dataset
from qrobust_keras.data.errors import CorruptDataError, DataNotFoundError, UnsafePickleError, WavFormatError
from qrobust_keras.data.image_folder import list_image_folder, load_image_folder
from qrobust_keras.data.mfcc import MFCC, WAVEFORM_FOLD, MFCCConfig, librosa_mfcc, mfcc, waveform_model
from qrobust_keras.data.safe_pickle import safe_load
from qrobust_keras.data.speech_commands import LABELS as SPEECH_COMMANDS_LABELS
from qrobust_keras.data.speech_commands import (
    add_background_noise, list_clips, load_background_noise, load_speech_commands, speaker_disjoint_split,
    speaker_id, which_set,
)
from qrobust_keras.data.svhn import load_svhn, read_svhn_mat
from qrobust_keras.data.wav import fit_length, load_clip, read_wav, resample

__all__ = [
    "load_cifar10", "find_cifar10", "download_cifar10", "keras_cache_dir", "read_pickle_batch", "CIFAR10_CLASSES",
    "DataSpec", "load_dataset", "DATASETS",
    "image_dataset", "random_crop_flip", "list_image_folder", "load_image_folder",
    "load_svhn", "read_svhn_mat",
    "load_speech_commands", "list_clips", "SPEECH_COMMANDS_LABELS", "speaker_id", "which_set",
    "speaker_disjoint_split", "load_background_noise", "add_background_noise",
    "mfcc", "librosa_mfcc", "MFCC", "MFCCConfig", "waveform_model", "WAVEFORM_FOLD",
    "read_wav", "load_clip", "fit_length", "resample",
    "safe_load", "DataNotFoundError", "CorruptDataError", "UnsafePickleError", "WavFormatError",
]
