r"""The demo's three tokenizers trained on one data set, and measured on its held-out clips.

  python -m musiclm_jax.demo.tokenizers --dataset=rendered_scores \
      --output_dir=output/tokenizers/rendered_scores
  python -m musiclm_jax.demo.tokenizers --dataset=synthetic_music \
      --output_dir=output/tokenizers/synthetic_music

runs the recipe's tokenizer steps (recipe.TOKENIZER_STEPS: build `<dataset>/demo`, train
SoundStream, w2v-BERT + k-means, MuLan + RVQ at the demo's sizes and step counts) and then
evaluation/tokenizer_report.py on `<dataset>_pairs_demo`'s `--split` (validation: works, or
clips, no training step saw). Writes <output_dir>/tokenizer_report.json (another split and
--max_clips=N add `_<split>` and `_N` to the name) and prints it; a rerun skips finished steps.
"""
import json
import os

from absl import app, flags

from musiclm_jax.core import files
from musiclm_jax.demo import recipe as demo_recipe
from musiclm_jax.demo import step_runner

flags.DEFINE_string("dataset", "rendered_scores", "A data set with a `demo` config and "
                    "<dataset>_{audio,pairs}_demo tasks.")
flags.DEFINE_string("output_dir", None, "Where the data, the models and the report go.")
flags.DEFINE_string("split", "validation", "The held-out split the report reads.")
flags.DEFINE_float("steps_scale", 1.0, "Multiplies every training length.")
flags.DEFINE_integer("max_clips", None, "Read at most this many clips of the split (the "
                     "first ones): equal numbers make retrieval comparable across sets.")
flags.mark_flag_as_required("output_dir")
REPORT = "tokenizer_report.json"


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  output_dir = os.path.abspath(flags.FLAGS.output_dir)
  dataset = flags.FLAGS.dataset
  steps = [s for s in demo_recipe.steps(output_dir, flags.FLAGS.steps_scale, dataset=dataset)
           if s.name in demo_recipe.TOKENIZER_STEPS]
  try:
    step_runner.run_steps(steps, os.path.join(output_dir, "steps"), cwd=os.getcwd())
  except step_runner.StepFailed as error:
    raise SystemExit(f"[tokenizers] {error}; rerun the same command to continue") from None
  out = demo_recipe.Paths(output_dir)
  os.environ["MUSICLM_TFDS_DIR"] = out.tfds
  from musiclm_jax.core import gin_utils  # pylint: disable=import-outside-toplevel
  from musiclm_jax.evaluation import tokenizer_report  # pylint: disable=import-outside-toplevel
  gin_utils.parse_gin(["tasks/synthetic_music_tokens.gin"], [
      f"SOUNDSTREAM_DIR='{out.soundstream}'", f"W2V_BERT_DIR='{out.w2v_bert}'",
      f"MULAN_DIR='{out.mulan}'"])
  result = tokenizer_report.report(f"{dataset}_pairs_{demo_recipe.DATASET_CONFIG}",
                                   flags.FLAGS.split, flags.FLAGS.max_clips)
  result["train_steps"] = {k: max(1, int(round(v * flags.FLAGS.steps_scale)))
                           for k, v in demo_recipe.TRAIN_STEPS.items()
                           if k in ("soundstream", "w2v_bert", "mulan")}
  suffix = "" if flags.FLAGS.split == "validation" else f"_{flags.FLAGS.split}"
  if flags.FLAGS.max_clips is not None:
    suffix += f"_{flags.FLAGS.max_clips}"
  name = REPORT.replace(".json", f"{suffix}.json")
  files.write_json(os.path.join(output_dir, name), result, indent=2)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
