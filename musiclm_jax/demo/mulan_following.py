"""Does MuLan's text tower understand a prompt? Prompt following measured before any stage.

  python -m musiclm_jax.demo.mulan_following MULAN_DIR OUT.json PROMPTS_FILE [PROMPTS_FILE ...]
      [--conditioning_index=INDEX.npz]

MULAN_DIR holds a tiny MuLan (models/mulan/tiny.gin, the demo's) trained on the demo's
corpus. Clips freshly rendered from that corpus's attribute space (music_synth.DEMO: the
distribution it trained on, not its clips) are embedded by the audio tower. For each prompt
and attribute (register, instrument, drums), the value whose clips the prompt's text embedding
is on average most similar to is MuLan's reading of the prompt; its accuracy is scored against
the shuffled-prompt control (prompt_following.score). The stages see a prompt only through
these embeddings' codes, so what MuLan misreads here no stage can follow
(docs/prompt_following.md). With a conditioning index (inference/conditioning_index.py) each
prompt is also read through the indexed tuple generation would condition on: its dequantised
vector in place of the text embedding ("<prompts file> via index" in OUT.json).
"""
import json
import sys

import numpy as np

from musiclm_jax.core import files, gin_utils
from musiclm_jax.data import music_synth
from musiclm_jax.demo import prompt_following, prompts as demo_prompts

ATTRIBUTES = demo_prompts.ATTRIBUTES
CLIPS = 240
SECONDS = 4.0


def read_attributes(embed_text, clip_embeddings: np.ndarray, clip_attributes, texts) -> dict:
  """{attribute: [the value each text reads as]} (see the module doc)."""
  similarity = np.asarray(embed_text(list(texts))) @ clip_embeddings.T
  readings = {}
  for attribute, values in ATTRIBUTES.items():
    values = [str(v) for v in values]
    of_value = np.array([[str(a[attribute]) == v for a in clip_attributes] for v in values])
    if not of_value.any(axis=1).all():
      raise ValueError(f"no rendered clip has {attribute} in {values}; render more clips")
    means = np.stack([similarity[:, row].mean(axis=1) for row in of_value], axis=1)
    readings[attribute] = [values[i] for i in means.argmax(axis=1)]
  return readings


USAGE = ("usage: python -m musiclm_jax.demo.mulan_following MULAN_DIR OUT.json PROMPTS_FILE "
         "[PROMPTS_FILE ...] [--conditioning_index=INDEX.npz]")
INDEX_FLAG = "--conditioning_index="


def main(argv) -> None:
  index_files = [a[len(INDEX_FLAG):] for a in argv[1:] if a.startswith(INDEX_FLAG)]
  args = [a for a in argv[1:] if not a.startswith(INDEX_FLAG)]
  if len(args) < 3 or len(index_files) > 1 or any(a.startswith("-") for a in args):
    raise SystemExit(USAGE)
  mulan_dir, out, prompt_files = args[0], args[1], args[2:]
  gin_utils.parse_gin(["models/mulan/tiny.gin"], [])
  # pylint: disable=import-outside-toplevel  (JAX and the towers: after gin is parsed)
  from musiclm_jax.inference.conditioning_index import ConditioningIndex
  from musiclm_jax.mulan import mulan, mulan_tokenizer
  index = ConditioningIndex.load(index_files[0]) if index_files else None  # fails fast
  embedder = mulan_tokenizer.MuLanEmbedder.from_model_dir(mulan_dir, mulan.MuLanModel())
  readers = {"": embedder.embed_text}
  if index is not None:
    quantizer = mulan_tokenizer.MuLanQuantizer.load(mulan_tokenizer.rvq_path(mulan_dir))
    readers[" via index"] = lambda texts: quantizer.vectors(
        index.nearest(quantizer, embedder.embed_text(texts)))
  rate = embedder.model.config.sample_rate
  rendered = [music_synth.render_clip(i, 1, rate, SECONDS, music_synth.DEMO)
              for i in range(CLIPS)]
  clip_embeddings = np.concatenate([
      embedder.embed_audio(np.stack([wav for wav, _, _ in rendered[i:i + 32]]))
      for i in range(0, CLIPS, 32)])
  clip_attributes = [attributes for _, _, attributes in rendered]
  result = {}
  for path in prompt_files:
    with open(path, encoding="utf-8") as f:
      records = [json.loads(line) for line in f if line.strip()]
    for suffix, embed_text in readers.items():
      readings = read_attributes(embed_text, clip_embeddings, clip_attributes,
                                 [r["text"] for r in records])
      key = path + suffix
      result[key] = {a: prompt_following.score(readings[a],
                                                [str(r["attributes"][a]) for r in records])
                     for a in ATTRIBUTES}
      for attribute, score in result[key].items():
        print(f"[mulan] {key}: {attribute} read as prompted for {score['matched']:.2f} of "
              f"{score['clips']} prompts (shuffled prompts: {score['shuffled']:.2f})")
  files.write_json(out, result)


if __name__ == "__main__":
  main(sys.argv)
