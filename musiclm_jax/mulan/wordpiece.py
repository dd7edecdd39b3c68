"""WordPiece tokenization for MuLan's BERT text tower, as TensorFlow ops (runs inside tf.data).

  tokenizer = BertTextTokenizer(minilm_weights.vocab_path(), max_length=64)
  ids = tokenizer.tokenize(["a calm piano melody"])   # int32 [1, 64]: [CLS] ... [SEP] 0 0 ...

tensorflow_text's BertTokenizer does the basic + WordPiece split of the reference (Hugging
Face's uncased BertTokenizer: lower-casing, accent stripping, punctuation and CJK splitting);
tests/mulan/test_bert_minilm.py checks the ids match. Being graph ops with a static lookup table, it
keeps the input pipeline checkpointable (no py_function). Truncation keeps the first
`max_length - 2` word pieces, then [CLS] and [SEP] are added, as Hugging Face does.
"""
import os
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

PAD_TOKEN, CLS_TOKEN, SEP_TOKEN, UNK_TOKEN = "[PAD]", "[CLS]", "[SEP]", "[UNK]"


def read_vocab(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"WordPiece vocabulary not found: {path}")
  with open(path, encoding="utf-8") as f:
    vocab = [line.rstrip("\n") for line in f]
  missing = [t for t in (PAD_TOKEN, CLS_TOKEN, SEP_TOKEN, UNK_TOKEN) if t not in vocab]
  if missing:
    raise ValueError(f"WordPiece vocabulary {path} lacks the special tokens {missing}")
  if vocab.index(PAD_TOKEN) != 0:
    raise ValueError(f"WordPiece vocabulary {path}: [PAD] must be id 0 (BERT masks id 0)")
  return vocab


class BertTextTokenizer:
  """Captions -> int32 `[..., max_length]` ids: [CLS] pieces [SEP], zero-padded."""

  def __init__(self, vocab_file: str, max_length: int = 64, lower_case: bool = True):
    if max_length < 3:
      raise ValueError(f"max_length must leave room for [CLS], a word piece and [SEP], "
                       f"got {max_length}")
    vocab = read_vocab(vocab_file)
    self.vocab_file = vocab_file
    self.vocab_size = len(vocab)
    self.max_length = max_length
    self.cls_id, self.sep_id = vocab.index(CLS_TOKEN), vocab.index(SEP_TOKEN)
    self._vocab = vocab
    self._tokenizer = tf_text.BertTokenizer(vocab_file, lower_case=lower_case,
                                            token_out_type=tf.int64, unknown_token=UNK_TOKEN)

  def tokenize_tf(self, text: tf.Tensor) -> tf.Tensor:
    """string `[]` or `[n]` -> int32 `[max_length]` or `[n, max_length]` (graph ops)."""
    scalar = text.shape.rank == 0
    texts = tf.reshape(text, [-1])
    pieces = self._tokenizer.tokenize(texts).merge_dims(-2, -1)       # ragged [n, (pieces)]
    pieces = pieces[:, :self.max_length - 2]
    n = tf.shape(texts)[0]
    cls = tf.fill([n, 1], tf.constant(self.cls_id, tf.int64))
    sep = tf.fill([n, 1], tf.constant(self.sep_id, tf.int64))
    ids = tf.concat([cls, pieces, sep], axis=1).to_tensor(
        default_value=0, shape=[None, self.max_length])
    ids = tf.cast(ids, tf.int32)
    return ids[0] if scalar else ids

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """Python strings -> int32 `[n, max_length]`. Empty captions are an error."""
    if isinstance(texts, (str, bytes)):
      raise ValueError("tokenize takes a list of captions; wrap a single one: [caption]")
    texts = list(texts)
    if not texts:
      raise ValueError("tokenize got no captions")
    for i, text in enumerate(texts):
      if not isinstance(text, (str, bytes)):
        raise ValueError(f"caption {i} is {type(text).__name__}, not a string")
      if not (text.strip() if isinstance(text, str) else text.strip()):
        raise ValueError(f"caption {i} is empty; MuLan needs text to embed")
    return self.tokenize_tf(tf.constant(texts)).numpy()

  def decode(self, ids) -> list[str]:
    """int `[n, length]` -> the word pieces joined by spaces (for logs and tests)."""
    return [" ".join(self._vocab[i] for i in row if i != 0) for row in np.asarray(ids)]
