"""Tiny w2v-BERT and a tf-ops-only tone task for the w2v-BERT / k-means / tokenizer tests.

The task, `w2v_bert_test_tones`, is registered on import: clips of `CLIP_SAMPLES` at 16 kHz,
a melody of 200 ms notes drawn from 8 pitches plus a little noise, all from stateless tf
random ops seeded by the clip index (no py_function, so the input iterator checkpoints).
"""
import functools
import math

import flax.linen as nn
import jax
import seqio
import tensorflow as tf

from musiclm_jax.data.audio_feature_converter import AUDIO
from musiclm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig, W2vBertModel

TASK = "w2v_bert_test_tones"
SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000  # 1 s -> 25 frames
NOTE_SAMPLES = 3200   # 200 ms: 5 frames per note
PITCHES_HZ = (220.0, 277.2, 329.6, 392.0, 440.0, 523.3, 659.3, 784.0)
NUM_EXAMPLES = {"train": 256, "validation": 16}
_SPLIT_SEED = {"train": 0, "validation": 1}


def tiny_config(**overrides) -> W2vBertConfig:
  kwargs = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, subsampling_channels=8,
                num_contrastive_layers=1, num_mlm_layers=1, codebook_size=64, codebook_dim=16,
                num_distractors=20, dropout_rate=0.0, gumbel_decay=0.99)
  kwargs.update(overrides)
  return W2vBertConfig(**kwargs)


def tiny_model(**overrides) -> W2vBertModel:
  return W2vBertModel(W2vBert(tiny_config(**overrides)))


@functools.lru_cache(maxsize=None)
def _jitted_init(config: W2vBertConfig):
  model = W2vBertModel(W2vBert(config))
  # The parameter shapes do not depend on the clip length, so one shape serves every test.
  return jax.jit(lambda rng: nn.meta.unbox(
      model.get_initial_variables(rng, {"audio": (1, config.hop)})["params"]))


def init_params(model: W2vBertModel, seed: int = 0):
  """Unboxed parameters, initialised under jit and compiled once per config and process (XLA
  takes seconds for the many random initialisers; op-by-op init is slower still)."""
  return _jitted_init(model.config)(jax.random.key(seed))


def _tone_clip(split, index):
  seed = tf.stack([tf.constant(_SPLIT_SEED[split], tf.int64), index])
  num_notes = math.ceil(CLIP_SAMPLES / NOTE_SAMPLES)
  # An ascending scale from a random note: a masked note is predictable from its neighbours,
  # so the contrastive and MLM tasks have something to learn.
  first = tf.random.stateless_uniform([], seed, 0, len(PITCHES_HZ), dtype=tf.int32)
  notes = (first + tf.range(num_notes)) % len(PITCHES_HZ)
  hz = tf.repeat(tf.gather(tf.constant(PITCHES_HZ), notes), NOTE_SAMPLES)[:CLIP_SAMPLES]
  phase = tf.cumsum(2.0 * math.pi * hz / SAMPLE_RATE)
  noise = tf.random.stateless_normal([CLIP_SAMPLES], seed + 1) * 0.01
  return {AUDIO: 0.5 * tf.sin(phase) + noise}


def _dataset_fn(split, shuffle_files, seed=None):
  del shuffle_files, seed
  return tf.data.Dataset.range(NUM_EXAMPLES[split]).map(lambda i: _tone_clip(split, i))


if TASK not in seqio.TaskRegistry.names():
  seqio.TaskRegistry.add(
      TASK,
      source=seqio.FunctionDataSource(_dataset_fn, splits=tuple(NUM_EXAMPLES),
                                      num_input_examples=NUM_EXAMPLES),
      preprocessors=[],
      output_features={AUDIO: seqio.Feature(seqio.PassThroughVocabulary(size=0),
                                            add_eos=False, dtype=tf.float32)})
