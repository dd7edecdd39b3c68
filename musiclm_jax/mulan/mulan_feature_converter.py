"""SeqIO feature converter for MuLan: (audio, caption) pairs -> `{"audio", "text_tokens"}`.

  task   {"audio": float32 [<= L], "text": string []}
  model  {"audio": float32 [L], "text_tokens": int32 [max_length]}

Any task that yields `audio` and `text` trains MuLan (`<dataset>_pairs_<config>` in
musiclm_jax/data/audio_tasks.py). The caption is tokenized here, inside tf.data, with the model's own
WordPiece tokenizer, so tasks stay model-agnostic and the iterator stays checkpointable.
`task_feature_lengths` names only `audio` (the crop in samples): seqio trims every feature it
is given a length for, and a scalar string cannot be trimmed. Pairs whose caption is empty or
blank are dropped, like clips a TFDS build skips.
"""
from typing import Mapping

import seqio
import tensorflow as tf

from musiclm_jax.mulan.wordpiece import BertTextTokenizer

AUDIO, TEXT, TEXT_TOKENS = "audio", "text", "text_tokens"


class MuLanFeatureConverter(seqio.FeatureConverter):
  """Pads audio to L (like AudioFeatureConverter) and tokenizes `text` to `text_tokens`.

  The trainer builds converters as `cls(pack=...)`; MuLanModel hands it a
  `functools.partial(MuLanFeatureConverter, tokenizer=...)`.
  """
  TASK_FEATURES = {AUDIO: seqio.FeatureConverter.FeatureSpec(dtype=tf.float32)}
  MODEL_FEATURES = {AUDIO: seqio.FeatureConverter.FeatureSpec(dtype=tf.float32),
                    TEXT_TOKENS: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, tokenizer: BertTextTokenizer, pack: bool = False, **kwargs):
    if pack:
      raise ValueError("MuLanFeatureConverter cannot pack (audio, text) pairs; set "
                       "DatasetConfig.pack = False")
    super().__init__(pack=False, **kwargs)
    self.tokenizer = tokenizer

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    if TEXT not in ds.element_spec:
      raise ValueError(f"MuLan trains on (audio, text) pairs, but the task yields only "
                       f"{sorted(ds.element_spec)}; use a `<dataset>_pairs_<config>` task")
    length = task_feature_lengths[AUDIO]
    ds = ds.filter(lambda ex: tf.strings.length(tf.strings.strip(ex[TEXT])) > 0)

    def convert(example):
      wav = example[AUDIO][:length]
      wav = tf.pad(wav, [[0, length - tf.shape(wav)[0]]])
      return {AUDIO: tf.ensure_shape(wav, [length]),
              TEXT_TOKENS: self.tokenizer.tokenize_tf(example[TEXT])}

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict:
    return {AUDIO: task_feature_lengths[AUDIO], TEXT_TOKENS: self.tokenizer.max_length}
