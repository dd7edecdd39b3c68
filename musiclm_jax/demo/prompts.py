"""The demo's prompts: captions of the synthetic set's style, one per combination of the
attributes the demo's corpus varies (music_synth.DEMO: register, instrument, drums), each in
several wordings, so the demo can measure whether generated audio follows its prompt better
than a shuffled-prompt control (prompt_following.py).
"""
import itertools
import json
import string
import sys
from typing import Any, Callable

import numpy as np

from musiclm_jax.core import files
from musiclm_jax.data import music_captions, music_synth

SPACE = music_synth.DEMO
REGISTERS = SPACE.registers
INSTRUMENTS = SPACE.instruments
DRUMS = SPACE.drums
# The attributes the prompts vary, with their values: what the following scores judge.
ATTRIBUTES = {"register": REGISTERS, "instrument": INSTRUMENTS, "drums": DRUMS}
# Captions per attribute combination, worded differently: more clips per attribute value make
# the prompt-following score less of a coin toss (144 prompts; the score's AUC still moves by
# about 0.1 between runs from nothing).
PHRASINGS = 12


def prompt_attributes() -> list[dict[str, Any]]:
  """Register x instrument x drums; the root in the register's middle, the rest at the
  corpus's one value (or the first)."""
  rows = []
  bpm = SPACE.tempo_bpm[0]
  for register, instrument, drums in itertools.product(REGISTERS, INSTRUMENTS, DRUMS):
    low, high = music_synth.REGISTERS[register]
    root = (low + high) // 2
    rows.append({
        "instrument": instrument, "register": register, "root_midi": root,
        "key": music_synth.KEY_NAMES[root % 12], "mode": SPACE.modes[0], "tempo_bpm": bpm,
        "tempo": music_synth.tempo_word(bpm), "drums": drums, "loudness": SPACE.loudness[0],
        "loudness_dbfs": music_synth.LOUDNESS_DBFS[SPACE.loudness[0]]})
  return rows


def write_prompts(path: str, seconds: float, seed: int = 0, phrasings: int = PHRASINGS,
                  write_text: Callable[[dict, np.random.Generator], str] = (
                      music_captions.write_caption),
                  id_prefix: str = "", rng_salt: tuple[int, ...] = ()) -> list[dict[str, Any]]:
  """Writes the prompts JSONL (`id`, `text`, `seconds`, `attributes`); returns its records.
  `write_text(attributes, rng)` words each prompt (heldout_prompts.py passes its own)."""
  records = []
  for i, attributes in enumerate(prompt_attributes()):
    drums = "drums" if attributes["drums"] else "nodrums"
    for variant in range(phrasings):
      text = write_text(attributes, np.random.default_rng([seed, i, variant, *rng_salt]))
      records.append({
          "id": f"{id_prefix}{i:02d}{string.ascii_lowercase[variant]}_"
                f"{attributes['register']}_{attributes['instrument']}_{drums}",
          "text": text, "seconds": seconds, "attributes": attributes})
  files.write_text(path, "".join(json.dumps(record) + "\n" for record in records))
  return records


if __name__ == "__main__":
  if len(sys.argv) != 3:
    raise SystemExit("usage: python -m musiclm_jax.demo.prompts OUT.jsonl SECONDS")
  write_prompts(sys.argv[1], float(sys.argv[2]))
