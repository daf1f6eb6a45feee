"""MFCC front ends: the MLCommons Tiny keyword-spotting features, a librosa variant, and a differentiable Keras layer.

``mfcc`` reproduces the feature pipeline of the MLCommons Tiny KWS reference (``get_dataset.py`` in
github.com/mlcommons/tiny, keyword_spotting): a 1 s clip at 16 kHz is divided by its own maximum sample, framed
with a 480-sample (30 ms) periodic Hann window every 320 samples (20 ms), transformed with a 512-point FFT
(``fft_length=None`` in the reference, i.e. the next power of two), reduced to magnitudes, projected on 40 mel bands
between 20 and 4000 Hz (``tf.signal.linear_to_mel_weight_matrix``), log-compressed as ``log(mel + 1e-6)``, and turned
into the first 10 DCT-II coefficients (``tf.signal.mfccs_from_log_mel_spectrograms``): 49 frames x 10 coefficients
x 1 channel. The reference DS-CNN reaches 92.0% on the shared canonical test clips with these features.

``MFCC`` is the same computation as a Keras layer, so a model can take raw waveforms and be attacked at waveform
level; it is differentiable everywhere (the magnitude gradient at zero-energy bins is zero, not NaN).

Example:

>>> import numpy as np
>>> from qrobust_keras.data.mfcc import mfcc, MFCC
>>> waves = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 16000)).astype("float32")
>>> mfcc(waves).shape
(4, 49, 10, 1)
>>> MFCC()(waves).shape
TensorShape([4, 49, 10, 1])
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from qrobust_keras._checks import WAVEFORM_RANGE, check_input_batch
from qrobust_keras._keras import keras, tf

__all__ = ["MFCCConfig", "mfcc", "librosa_mfcc", "MFCC", "NORMALIZATIONS", "waveform_model", "WAVEFORM_FOLD"]

NORMALIZATIONS = ("max", "max_abs", None)


@dataclass(frozen=True)
class MFCCConfig:
    """Parameters of the MLCommons KWS front end (defaults are the reference's).

    Attributes:
        sample_rate: Hz.
        clip_samples: clip length in samples (16000 = 1 s); inputs are zero-padded at the end or trimmed to it.
        frame_length: STFT window in samples (480 = 30 ms at 16 kHz).
        frame_step: STFT hop in samples (320 = 20 ms).
        fft_length: FFT size (512: the reference passes ``fft_length=None``, the next power of two of 480).
        num_mel_bins: mel bands (40).
        lower_edge_hertz: lowest mel edge (20 Hz).
        upper_edge_hertz: highest mel edge (4000 Hz).
        num_mfccs: DCT coefficients kept (10).
        log_offset: added before the log (1e-6).
        normalize: ``"max"`` divides each clip by its largest sample as the reference code does
            (``x / reduce_max(x)``); ``"max_abs"`` by its largest magnitude; ``None`` leaves the waveform as given.
            Clips whose divisor is not positive (all-zero, or all-negative under ``"max"``) fall back to ``"max_abs"``
            and then to 1, where the reference would produce NaNs.
    """

    sample_rate: int = 16000
    clip_samples: int = 16000
    frame_length: int = 480
    frame_step: int = 320
    fft_length: int = 512
    num_mel_bins: int = 40
    lower_edge_hertz: float = 20.0
    upper_edge_hertz: float = 4000.0
    num_mfccs: int = 10
    log_offset: float = 1e-6
    normalize: str | None = "max"

    def __post_init__(self):
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got normalize={self.normalize!r}")
        for name in ("sample_rate", "clip_samples", "frame_length", "frame_step", "fft_length", "num_mel_bins",
                     "num_mfccs"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a positive integer; got {name}={getattr(self, name)!r}")
        if self.fft_length < self.frame_length:
            raise ValueError(f"fft_length must be >= frame_length={self.frame_length}; got {self.fft_length}")
        if self.num_mfccs > self.num_mel_bins:
            raise ValueError(f"num_mfccs must be <= num_mel_bins={self.num_mel_bins}; got {self.num_mfccs}")
        if not 0 <= self.lower_edge_hertz < self.upper_edge_hertz <= self.sample_rate / 2:
            raise ValueError("need 0 <= lower_edge_hertz < upper_edge_hertz <= sample_rate/2; got "
                             f"{self.lower_edge_hertz}, {self.upper_edge_hertz}, sample_rate={self.sample_rate}")

    @property
    def num_frames(self) -> int:
        """Frames per clip: ``1 + (clip_samples - frame_length) // frame_step`` (49 for the reference)."""
        return 1 + (self.clip_samples - self.frame_length) // self.frame_step

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Shape of one clip's features, ``(num_frames, num_mfccs, 1)``."""
        return (self.num_frames, self.num_mfccs, 1)


@tf.custom_gradient
def _magnitude(stft: tf.Tensor):
    """``tf.abs`` of a complex STFT, with gradient ``conj``-weighted by ``z / |z|`` and exactly 0 where ``z = 0``."""
    mag = tf.abs(stft)

    def grad(upstream):
        unit = tf.math.divide_no_nan(stft, tf.complex(mag, tf.zeros_like(mag)))
        return tf.complex(upstream, tf.zeros_like(upstream)) * unit

    return mag, grad


def _fit_length_tf(x: tf.Tensor, length: int) -> tf.Tensor:
    n = tf.shape(x)[-1]
    x = x[..., :length]
    pad = tf.maximum(length - n, 0)
    x = tf.pad(x, [[0, 0], [0, pad]])
    return tf.ensure_shape(x, [None, length])


def _normalize_tf(x: tf.Tensor, mode: str | None) -> tf.Tensor:
    if mode is None:
        return x
    peak_abs = tf.reduce_max(tf.abs(x), axis=-1, keepdims=True)
    ones = tf.ones_like(peak_abs)
    safe_abs = tf.where(peak_abs > 0, peak_abs, ones)
    if mode == "max_abs":
        return x / safe_abs
    peak = tf.reduce_max(x, axis=-1, keepdims=True)
    return x / tf.where(peak > 0, peak, safe_abs)


def _features_tf(waveforms: tf.Tensor, cfg: MFCCConfig, mel_matrix: tf.Tensor) -> tf.Tensor:
    """The reference graph on a float32 batch ``(B, samples)`` -> ``(B, frames, num_mfccs, 1)``."""
    x = _fit_length_tf(tf.cast(waveforms, tf.float32), cfg.clip_samples)
    x = _normalize_tf(x, cfg.normalize)
    stft = tf.signal.stft(x, frame_length=cfg.frame_length, frame_step=cfg.frame_step, fft_length=cfg.fft_length,
                          window_fn=tf.signal.hann_window, pad_end=False)
    mel = tf.tensordot(_magnitude(stft), mel_matrix, 1)
    log_mel = tf.math.log(mel + cfg.log_offset)
    coeffs = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., : cfg.num_mfccs]
    return coeffs[..., tf.newaxis]


def _mel_matrix(cfg: MFCCConfig) -> tf.Tensor:
    return tf.signal.linear_to_mel_weight_matrix(cfg.num_mel_bins, cfg.fft_length // 2 + 1, cfg.sample_rate,
                                                 cfg.lower_edge_hertz, cfg.upper_edge_hertz)


def _as_batch(waveforms) -> tuple[np.ndarray, bool]:
    x = np.asarray(waveforms)
    if x.dtype.kind not in "iuf":
        raise ValueError(f"waveforms must be a numeric array; got dtype={x.dtype}")
    if x.dtype.kind in "iu":  # integer PCM: scale like the loaders (int16 / 32768)
        x = x.astype(np.float32) / float(2 ** (8 * x.dtype.itemsize - 1))
    single = x.ndim == 1
    if single:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"waveforms must have shape (samples,) or (clips, samples); got shape={x.shape}")
    if x.size == 0:
        return x.astype(np.float32), single
    return check_input_batch(x, "waveforms", WAVEFORM_RANGE), single


def mfcc(waveforms, *, backend: str = "tf", batch_size: int = 1024, config: MFCCConfig | None = None,
         **overrides) -> np.ndarray:
    """MLCommons Tiny KWS MFCC features of one clip or a batch of clips.

    Args:
        waveforms: shape ``(samples,)`` or ``(clips, samples)``; float in [-1, 1] or integer PCM (int16 is divided by
            32768). Clips are zero-padded at the end or trimmed to ``clip_samples`` (16000) first.
        backend: ``"tf"`` (the reference features, default) or ``"librosa"`` (see :func:`librosa_mfcc`; NOT
            compatible with the MLCommons weights).
        batch_size: clips per TensorFlow call (bounds memory).
        config: an :class:`MFCCConfig`; keyword ``overrides`` (e.g. ``normalize="max_abs"``) replace its fields.

    Returns:
        float32 array ``(clips, 49, 10, 1)``, or ``(49, 10, 1)`` for a single 1-D clip.

    Raises:
        ValueError: for a wrong shape/dtype, an unknown ``backend`` or an invalid configuration field.

    References:
        MLCommons Tiny benchmark, keyword spotting (Banbury et al. 2021, arXiv:2106.07597); DS-CNN features from
        Zhang et al. 2017, "Hello Edge" (arXiv:1711.07128).
    """
    cfg = _config(config, overrides)
    if backend == "librosa":
        return librosa_mfcc(waveforms, config=cfg)
    if backend != "tf":
        raise ValueError(f"backend must be 'tf' or 'librosa'; got backend={backend!r}")
    if int(batch_size) <= 0:
        raise ValueError(f"batch_size must be a positive integer; got batch_size={batch_size!r}")
    x, single = _as_batch(waveforms)
    fn = _compiled(cfg)
    parts = [fn(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), int(batch_size))]
    out = np.concatenate(parts) if parts else np.zeros((0,) + cfg.output_shape, np.float32)
    return out[0] if single else out


def librosa_mfcc(waveforms, *, config: MFCCConfig | None = None, **overrides) -> np.ndarray:
    """MFCCs computed with librosa (``librosa.feature.mfcc``), same frame grid and output shape as :func:`mfcc`.

    Same normalization, window (periodic Hann, 480 samples in a 512-point FFT), hop (320), 40 mel bands 20-4000 Hz
    and 10 coefficients, but librosa's conventions: power spectrogram, Slaney-normalized mel filters, ``10 log10``
    in dB with an 80 dB floor, orthonormal DCT. The values differ from the reference features (scale and shape),
    so models trained on :func:`mfcc` - including the MLCommons DS-CNN weights - must not be fed these features;
    use it only for models you train on it.

    Args:
        waveforms: as in :func:`mfcc`.
        config: an :class:`MFCCConfig`; keyword ``overrides`` replace its fields.

    Returns:
        float32 array ``(clips, 49, 10, 1)`` or ``(49, 10, 1)``.
    """
    import librosa

    cfg = _config(config, overrides)
    x, single = _as_batch(waveforms)
    x = x[:, : cfg.clip_samples]
    x = np.pad(x, [(0, 0), (0, cfg.clip_samples - x.shape[1])])
    if cfg.normalize is not None:
        peak_abs = np.abs(x).max(axis=1, keepdims=True)
        safe_abs = np.where(peak_abs > 0, peak_abs, 1.0)
        peak = x.max(axis=1, keepdims=True) if cfg.normalize == "max" else safe_abs
        x = x / np.where(peak > 0, peak, safe_abs)
    feats = librosa.feature.mfcc(y=x.astype(np.float32), sr=cfg.sample_rate, n_mfcc=cfg.num_mfccs,
                                 n_fft=cfg.fft_length, win_length=cfg.frame_length, hop_length=cfg.frame_step,
                                 window="hann", center=False, n_mels=cfg.num_mel_bins, fmin=cfg.lower_edge_hertz,
                                 fmax=cfg.upper_edge_hertz)
    out = np.swapaxes(feats, -1, -2)[..., None].astype(np.float32)
    return out[0] if single else out


@functools.lru_cache(maxsize=8)
def _compiled(cfg: MFCCConfig):
    mel = _mel_matrix(cfg)
    return tf.function(lambda w: _features_tf(w, cfg, mel), reduce_retracing=True)


def _config(config: MFCCConfig | None, overrides: dict) -> MFCCConfig:
    base = asdict(config or MFCCConfig())
    unknown = set(overrides) - set(base)
    if unknown:
        raise ValueError(f"unknown MFCC option(s) {sorted(unknown)}; accepted: {sorted(base)}")
    base.update(overrides)
    return MFCCConfig(**base)


@keras.saving.register_keras_serializable(package="qrobust_keras")
class MFCC(keras.layers.Layer):
    """Differentiable MLCommons KWS front end: waveform ``(batch, 16000)`` -> MFCC ``(batch, 49, 10, 1)``.

    Computes exactly :func:`mfcc` (same TensorFlow ops), so ``keras.Sequential([MFCC(), ds_cnn])`` classifies raw
    waveforms with the reference weights and gradient attacks can perturb the waveform. Inputs of another length are
    padded/trimmed to ``clip_samples``. The layer has no weights.

    Args:
        **kwargs: any :class:`MFCCConfig` field (``normalize``, ``fft_length``, ...) plus the usual Layer keywords.

    Example:
        >>> from qrobust_keras._keras import keras
        >>> from qrobust_keras.models import ds_cnn
        >>> kws = ds_cnn()        # or qrk.models.load_mlcommons("ds_cnn", path) for the reference weights
        >>> wave_in = keras.Input((16000,))
        >>> model = keras.Model(wave_in, kws(MFCC()(wave_in)))
        >>> model.output_shape
        (None, 12)
    """

    def __init__(self, sample_rate: int = 16000, clip_samples: int = 16000, frame_length: int = 480,
                 frame_step: int = 320, fft_length: int = 512, num_mel_bins: int = 40,
                 lower_edge_hertz: float = 20.0, upper_edge_hertz: float = 4000.0, num_mfccs: int = 10,
                 log_offset: float = 1e-6, normalize: str | None = "max", **kwargs):
        super().__init__(**kwargs)
        self.config = MFCCConfig(sample_rate=sample_rate, clip_samples=clip_samples, frame_length=frame_length,
                                 frame_step=frame_step, fft_length=fft_length, num_mel_bins=num_mel_bins,
                                 lower_edge_hertz=lower_edge_hertz, upper_edge_hertz=upper_edge_hertz,
                                 num_mfccs=num_mfccs, log_offset=log_offset, normalize=normalize)
        self._mel = _mel_matrix(self.config)

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        if x.shape.rank == 3 and x.shape[-1] == 1:  # (batch, samples, 1) audio tensors
            x = x[..., 0]
        return _features_tf(x, self.config, self._mel)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], *self.config.output_shape])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(asdict(self.config))
        return config


WAVEFORM_FOLD = (125, 128)  # 125 x 128 = 16,000 samples: one second at 16 kHz


def waveform_model(feature_model: keras.Model, **mfcc_kwargs) -> keras.Model:
    """``feature_model`` (MFCC in, scores out) behind the :class:`MFCC` front end, taking the 1 s waveform folded to
    ``(125, 128)`` (row ``r`` holds samples ``128 r .. 128 r + 127``).

    Folded, the waveform has the layout of a one-channel image, so every attack applies to it unchanged (Square's
    square windows then cover runs of consecutive samples in neighbouring rows); each input value is still one
    waveform sample, so an L-inf budget is in waveform units (full scale 1). Unfold with ``x.reshape(-1, 16000)``.

    Args:
        feature_model: a Keras model on ``(49, 10, 1)`` MFCCs, e.g. a zoo or MLCommons DS-CNN.
        mfcc_kwargs: :class:`MFCC` settings (the MLCommons front end by default).

    Example:
        >>> from qrobust_keras.models import ds_cnn
        >>> waveform_model(ds_cnn()).input_shape
        (None, 125, 128)
    """
    # fixed layer names: the same feature model gives the same architecture, hence the same model fingerprint
    # (qrobust_keras.evaluation.shards.model_fingerprint), however many were built before in this process
    wave_in = keras.Input(WAVEFORM_FOLD, name="waveform")
    wave = keras.layers.Reshape((WAVEFORM_FOLD[0] * WAVEFORM_FOLD[1],), name="unfold")(wave_in)
    features = MFCC(name="mfcc", **mfcc_kwargs)(wave)
    return keras.Model(wave_in, feature_model(features), name="waveform_" + feature_model.name)
