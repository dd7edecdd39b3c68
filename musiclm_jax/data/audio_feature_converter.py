"""SeqIO feature converter for raw-audio tasks: `{"audio": float32 [samples]}` batches.

The models that learn from waveforms (w2v-BERT here; SoundStream and MuLan can share it) read
one fixed-length feature. Clips are cropped by the task; the converter drops every other
feature (ids, text) and pads a short clip with zeros to the requested length, so each batch
has the static shape jit needs.
"""
from typing import Mapping

import seqio
import tensorflow as tf

AUDIO = "audio"


class AudioFeatureConverter(seqio.FeatureConverter):
  """task `{"audio": [<= L]}` -> model `{"audio": [L]}`, L = task_feature_lengths["audio"]."""
  TASK_FEATURES = {AUDIO: seqio.FeatureConverter.FeatureSpec(dtype=tf.float32)}
  MODEL_FEATURES = {AUDIO: seqio.FeatureConverter.FeatureSpec(dtype=tf.float32)}
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, pack: bool = False, **kwargs):
    if pack:
      raise ValueError("AudioFeatureConverter cannot pack waveforms; set "
                       "DatasetConfig.pack = False")
    super().__init__(pack=False, **kwargs)

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    length = task_feature_lengths[AUDIO]

    def pad(example):
      wav = example[AUDIO][:length]
      wav = tf.pad(wav, [[0, length - tf.shape(wav)[0]]])
      return {AUDIO: tf.ensure_shape(wav, [length])}

    return ds.map(pad, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict:
    return {AUDIO: task_feature_lengths[AUDIO]}
