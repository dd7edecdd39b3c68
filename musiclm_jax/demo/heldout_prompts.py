"""Prompts the demo's models never saw the like of: the demo's attributes (register x
instrument x drums, prompts.py) in wordings no training caption uses.

The training captions draw their words from `music_captions.PHRASES` and five sentence
templates. These prompts use other words for every attribute value (synonyms, images,
references: "down in the bass", "8-bit video-game bleeps", "a rhythm section keeps time"),
other verbs and sentence frames, other word orders, and sentences both shorter and longer
than the templates'. tests/demo/test_heldout_prompts.py keeps them out of training: no
training phrase occurs in them, and no word that names an attribute in them occurs in any
training phrase.

Scoring them the same way as the in-template prompts asks whether the system follows what a
prompt means or only the surface form it was trained on.
"""
import sys
from typing import Any

import numpy as np

from musiclm_jax.demo import prompts as demo_prompts

# Per attribute value, each wording in the grammatical role the frames below give it.
REGISTER = {  # a phrase that follows the instrument
    "low": ("down in the bass", "in its lowest octaves", "at the bottom of the keyboard",
            "in rumbling baritone territory", "way down where a tuba sits"),
    "high": ("up in the treble", "in its highest octaves", "at the top of the keyboard",
             "in piercing soprano territory", "way up where a piccolo sits"),
}
INSTRUMENT = {  # a noun phrase
    "sine": ("a flutey whistle", "a clean sinusoidal oscillator", "an ocarina-style hum",
             "a whistling theremin"),
    "square": ("8-bit video-game bleeps", "a retro console's pulse channel",
               "arcade-style beeps", "a hollow NES-era voice"),
    "plucked": ("a harp", "pizzicato picking", "a koto", "a mandolin"),
}
DRUMS = {  # a clause that follows the rest
    True: ("while a rhythm section keeps time", "over a thumping backbeat", "plus a backbeat",
           "with cymbals and toms crashing", "as a breakbeat rattles along"),
    False: ("and no rhythm section at all", "unaccompanied and beatless", "solo",
            "with nothing keeping time", "alone, no backbeat, no cymbals"),
}
# Sentence frames: other verbs, orders and lengths than music_captions' templates.
FRAMES = (
    "{instrument} {register} {drums}.",
    "Imagine {instrument} noodling {register} {drums}.",
    "Give me {instrument} {register}, {drums}.",
    "Someone improvises on {instrument} {register} {drums}; that is the whole recording.",
    "{register}: {instrument}, {drums}.",
    "For this clip I would like to hear {instrument} wandering {register}, {drums}, at a "
    "walking pace and in a happy-sounding key.",
    "Sketch for {instrument}, {register}, {drums}.",
    "A few seconds of {instrument} {register} {drums}, nothing more.",
)


def write_prompt(attributes: dict[str, Any], rng: np.random.Generator) -> str:
  """One held-out wording of `attributes`' register, instrument and drums."""
  words = {"register": str(rng.choice(REGISTER[attributes["register"]])),
           "instrument": str(rng.choice(INSTRUMENT[attributes["instrument"]])),
           "drums": str(rng.choice(DRUMS[bool(attributes["drums"])]))}
  text = FRAMES[int(rng.integers(len(FRAMES)))].format(**words)
  return text[:1].upper() + text[1:]


def write_prompts(path: str, seconds: float, seed: int = 0,
                  phrasings: int = demo_prompts.PHRASINGS) -> list[dict[str, Any]]:
  """Writes the held-out prompts JSONL (`id` starting "h", `text`, `seconds`, `attributes`):
  as many as prompts.write_prompts, over the same attributes; returns its records."""
  return demo_prompts.write_prompts(path, seconds, seed, phrasings, write_text=write_prompt,
                                    id_prefix="h", rng_salt=(1,))


if __name__ == "__main__":
  if len(sys.argv) != 3:
    raise SystemExit("usage: python -m musiclm_jax.demo.heldout_prompts OUT.jsonl SECONDS")
  write_prompts(sys.argv[1], float(sys.argv[2]))
