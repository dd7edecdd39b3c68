"""Which part of a trained MusicLM loses the prompt? Each link scored on held-out clips.

Run after the demo (or any run with the demo's folder layout):

  .venv/bin/python bench/prompt_following_parts.py output/demo [--clips 32] [--temperature 0.6] [--guidance 3]

The demo scores the whole chain (text -> audio). This runs the chain from further along, so a
link that loses the prompt shows as the first row near the control:

  mulan retrieval   caption -> nearest training clip's audio embedding: same value? (control:
                    the share of training clips with that value)
  codec             SoundStream reconstructions of the held-out clips
  fine              true coarse codes -> fine stage -> codec
  coarse + fine     true semantic codes and the clips' MuLan audio codes (or their captions'
                    text codes, which stages trained at mulan_text_conditioning.rate 1 read)
                    -> coarse -> fine
  audio tokens      the clips' MuLan audio codes -> all three stages (training's conditioning)
  text tokens       their captions' MuLan text codes -> all three stages (inference's)

Audio rows score register, instrument (timbre) and drums by rank (prompt_following.rank_score:
AUC, control 0.5, permutation p); the clips are the synthetic corpus's validation clips, their
attributes the "prompts". Sampling temperatures come from --temperature for the semantic and
coarse stages (the paper's 1.0 / 0.95 when not given), their classifier-free guidance from
--guidance (the demo's is 3).
"""
import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import gin  # pylint: disable=g-import-not-at-top
import jax
import numpy as np

from musiclm_jax.demo import prompts as demo_prompts, recipe, prompt_following
from musiclm_jax.stages import generation
from musiclm_jax.inference import pipeline
from musiclm_jax.data import music_synth, synthetic_music
from musiclm_jax.evaluation.mulan_cycle import cosine_similarity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANKED = ("register", "instrument", "drums")


def load(run_dir: str, temperature, guidance=None) -> pipeline.MusicLM:
  gin.add_config_file_search_path(os.path.join(REPO, "musiclm_jax", "gin"))
  parts = {"SOUNDSTREAM_DIR": "soundstream", "MULAN_DIR": "mulan", "SEMANTIC_DIR": "semantic",
           "COARSE_DIR": "coarse", "FINE_DIR": "fine", "W2V_BERT_DIR": "w2v_bert"}
  gin.parse_config_files_and_bindings(
      ["pipeline/tiny.gin"],
      [f"{k}='{os.path.join(os.path.abspath(run_dir), v)}'" for k, v in parts.items()] +
      ["STAGE='semantic'"])
  params = {s: {**({} if temperature is None else {"temperature": temperature}),
                **({} if guidance is None else {"guidance_scale": guidance})}
            for s in ("semantic", "coarse")}
  return pipeline.load(decoder_params=params)


def held_out_clips(count: int):
  """The demo corpus' config and its first `count` held-out clips (the clips after its
  training clips), each `(wav, caption, attributes)` as `music_synth.render_clip` returns."""
  config = synthetic_music.config_by_name(recipe.DATASET_CONFIG)
  start = config.num_train
  return config, [music_synth.render_clip(i, config.seed, config.sample_rate, config.seconds,
                                          config.space) for i in range(start, start + count)]


def rank_row(name: str, wavs, attributes, sample_rate: int) -> dict:
  row = {"link": name}
  for attribute in RANKED:
    row[attribute] = prompt_following.rank_attribute(
        wavs, sample_rate, [str(a[attribute]) for a in attributes], attribute)
  return row


def mulan_retrieval(lm, config, captions, attributes) -> dict:
  train = [music_synth.render_clip(i, config.seed, config.sample_rate, config.seconds,
                                   config.space) for i in range(config.num_train)]
  bank = lm.mulan.embedder.embed_audio(np.stack([w for w, _, _ in train]))
  text = lm.mulan.embedder.embed_text(captions)
  nearest = cosine_similarity(text[:, None], bank[None]).argmax(axis=1)
  row = {"link": "mulan retrieval"}
  for attribute in ("register", "instrument", "drums"):
    values = [a[attribute] for _, _, a in train]
    matched = np.mean([values[j] == a[attribute] for j, a in zip(nearest, attributes)])
    control = np.mean([values.count(a[attribute]) / len(values) for a in attributes])
    row[attribute] = {"matched": float(matched), "shuffled": float(control)}
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("run_dir")
  parser.add_argument("--clips", type=int, default=32)
  parser.add_argument("--temperature", type=float, default=None)
  parser.add_argument("--guidance", type=float, default=None,
                      help="classifier-free guidance scale of the semantic and coarse stages")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  lm = load(args.run_dir, args.temperature, args.guidance)
  config, rendered = held_out_clips(args.clips)
  if config.space != demo_prompts.SPACE:
    raise SystemExit(f"the demo's corpus {config.name} is not drawn from the prompts' space")
  wavs = np.stack([w for w, _, _ in rendered])
  captions = [c for _, c, _ in rendered]
  attributes = [a for _, _, a in rendered]
  rate, layout, rng = lm.sample_rate, lm.layout, jax.random.key(args.seed)
  semantic, acoustic = lm.tokenize_clip(wavs, config.sample_rate)
  audio_codes = lm.mulan.audio_to_tokens(wavs)
  coarse_levels = layout.coarse_levels
  true_coarse = acoustic[..., :coarse_levels]

  def decode(coarse, fine):
    return lm._decode(generation.acoustic_codes(coarse, fine))  # pylint: disable=protected-access

  rows = [mulan_retrieval(lm, config, captions, attributes),
          rank_row("codec", lm._decode(acoustic), attributes, rate)]  # pylint: disable=protected-access
  crops = lm.crop_seconds
  fine = generation.generate_fine(lm.samplers["fine"], layout, true_coarse, rng,
                                  crop_seconds=crops.get("fine"))
  rows.append(rank_row("fine", decode(true_coarse, fine), attributes, rate))
  text_codes = lm.text_tokens(captions)
  for name, codes in (("audio", audio_codes), ("text", text_codes)):
    coarse = generation.generate_coarse(lm.samplers["coarse"], layout, [(codes, config.seconds)],
                                        semantic, rng, crop_seconds=crops.get("coarse"))
    fine = generation.generate_fine(lm.samplers["fine"], layout, coarse, rng,
                                    crop_seconds=crops.get("fine"))
    rows.append(rank_row(f"coarse + fine ({name} codes)", decode(coarse, fine), attributes,
                         rate))
  for name, codes in (("audio tokens", audio_codes), ("text tokens", text_codes)):
    _, generated, _ = lm._run_stages([(codes, config.seconds)], rng)  # pylint: disable=protected-access
    rows.append(rank_row(name, lm._decode(generated), attributes, rate))  # pylint: disable=protected-access

  print(f"{len(wavs)} held-out clips of synthetic_music/{config.name}; semantic/coarse "
        f"temperature {args.temperature or 'paper'}, guidance {args.guidance or 'none'}")
  print("| link | register | instrument | drums |\n|---|---|---|---|")
  for row in rows:
    cells = []
    for attribute in ("register", "instrument", "drums"):
      score = row.get(attribute)
      if score is None:
        cells.append("")
      elif "auc" in score:
        cells.append(f"AUC {score['auc']:.2f} (p {score['p_value']:.3f})")
      else:
        cells.append(f"{score['matched']:.2f} vs {score['shuffled']:.2f}")
    print(f"| {row['link']} | " + " | ".join(cells) + " |")
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
