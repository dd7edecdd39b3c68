"""`python -m musiclm_jax.demo.report GENERATIONS_DIR PROMPTS_FILE SECONDS`: how well the demo's
audio follows its prompts (prompt_following.py), against the shuffled-prompt control.
Writes GENERATIONS_DIR/prompt_following.json and prints one line per attribute."""
import os
import sys

from musiclm_jax.core import files
from musiclm_jax.demo import prompts as demo_prompts, prompt_following

ATTRIBUTES = demo_prompts.ATTRIBUTES
OUTPUT = "prompt_following.json"


def main(argv) -> None:
  if len(argv) != 4:
    raise SystemExit("usage: python -m musiclm_jax.demo.report GENERATIONS_DIR PROMPTS_FILE "
                     "SECONDS")
  generations_dir, prompts_file, seconds = argv[1], argv[2], float(argv[3])
  result = prompt_following.report(generations_dir, prompts_file, seconds, ATTRIBUTES,
                                   demo_prompts.SPACE)
  files.write_json(os.path.join(generations_dir, OUTPUT), result)
  for attribute, score in result.items():
    line = (f"[demo] {attribute}: {score['matched']:.2f} of {score['clips']} clips classified "
            f"as prompted (shuffled prompts: {score['shuffled']:.2f})")
    if "ranking" in score:
      ranking = score["ranking"]
      line += (f"; ranked the prompted way: AUC {ranking['auc']:.2f} (shuffled prompts: 0.50, "
               f"p = {ranking['p_value']:.3f})")
    print(line)


if __name__ == "__main__":
  main(sys.argv)
