"""The held-out prompts stay out of training: no training phrase in them, no word naming an
attribute in them that any training caption could contain."""
import itertools
import json
import re

import numpy as np

from musiclm_jax.data import music_captions, music_synth
from musiclm_jax.demo import heldout_prompts, prompts as demo_prompts

# Words that carry no attribute: articles, prepositions, conjunctions.
FUNCTION_WORDS = {"a", "an", "the", "in", "on", "of", "at", "and", "with", "no", "its", "way",
                  "up", "down", "while", "over", "as", "along", "all", "under", "above", "to"}


def _words(text: str) -> set[str]:
  return set(re.findall(r"[a-z0-9]+", text.lower()))


def _training_words() -> set[str]:
  phrases = [p for values in music_captions.PHRASES.values() for ps in values.values() for p in ps]
  templates = [re.sub(r"\{[^}]*\}", " ", t) for t in music_captions._TEMPLATES]  # pylint: disable=protected-access
  return set().union(*map(_words, phrases + templates))


def test_no_word_naming_an_attribute_occurs_in_any_training_caption():
  families = (heldout_prompts.REGISTER, heldout_prompts.INSTRUMENT, heldout_prompts.DRUMS)
  attribute_words = set().union(*(_words(p) for family in families
                                   for phrases in family.values() for p in phrases))
  shared = (attribute_words - FUNCTION_WORDS) & _training_words()
  assert not shared, f"held-out attribute wordings reuse training words {sorted(shared)}"


def test_training_captions_and_held_out_prompts_do_not_meet(tmp_path):
  records = heldout_prompts.write_prompts(str(tmp_path / "heldout.jsonl"), 4.0)
  assert records == [json.loads(line) for line in (tmp_path / "heldout.jsonl").open()]
  texts = [r["text"] for r in records]
  for text, attribute in itertools.product(texts, music_captions.PHRASES):
    assert not music_captions.phrases_found(text, attribute), (text, attribute)
  # Captions as the synthetic set writes them (every template and phrase shows up in 2000).
  training = {music_synth.render_clip(i, 0, 8000, 0.5, music_synth.DEMO)[1] for i in range(300)}
  rng = np.random.default_rng(0)
  training |= {music_captions.write_caption(a, rng) for a in demo_prompts.prompt_attributes()
               for _ in range(150)}
  assert not training & set(texts)
  frames_words = set().union(*(_words(re.sub(r"\{[^}]*\}", " ", f))
                               for f in heldout_prompts.FRAMES))
  assert "plays" not in frames_words and "features" not in frames_words


def test_held_out_prompts_cover_the_demo_prompts_attributes_in_many_wordings(tmp_path):
  heldout = heldout_prompts.write_prompts(str(tmp_path / "h.jsonl"), 4.0)
  demo = demo_prompts.write_prompts(str(tmp_path / "d.jsonl"), 4.0)
  assert [r["attributes"] for r in heldout] == [r["attributes"] for r in demo]
  assert len({r["id"] for r in heldout}) == len(heldout)
  assert not {r["id"] for r in heldout} & {r["id"] for r in demo}
  assert len({r["text"] for r in heldout}) > 0.9 * len(heldout)
  lengths = [len(r["text"].split()) for r in heldout]
  assert min(lengths) <= 8 and max(lengths) >= 25
  # The attribute wordings used are the ones the record's attributes name.
  for record in heldout:
    a = record["attributes"]
    for family, value in ((heldout_prompts.REGISTER, a["register"]),
                          (heldout_prompts.INSTRUMENT, a["instrument"]),
                          (heldout_prompts.DRUMS, a["drums"])):
      assert any(p.lower() in record["text"].lower() for p in family[value]), record


def test_mulan_reading_picks_the_value_whose_clips_the_text_is_nearest():
  from musiclm_jax.demo import mulan_following  # pylint: disable=import-outside-toplevel
  # A toy joint space: one axis per attribute, clips at +-1, texts that name a value near it.
  clips, attributes = [], []
  for register, instrument, drums in itertools.product(("low", "high"),
                                                       ("sine", "plucked", "square"),
                                                       (False, True)):
    i = ("sine", "plucked", "square").index(instrument)
    clips.append([1.0 if register == "high" else -1.0, np.cos(2 * i), np.sin(2 * i),
                  1.0 if drums else -1.0])
    attributes.append({"register": register, "instrument": instrument, "drums": drums})
  texts = {"high square drums": [1, np.cos(4), np.sin(4), 1], "low sine": [-1, 1, 0, -1]}
  readings = mulan_following.read_attributes(lambda t: np.array([texts[x] for x in t]),
                                             np.array(clips), attributes, list(texts))
  assert readings == {"register": ["high", "low"], "instrument": ["square", "sine"],
                      "drums": ["True", "False"]}
