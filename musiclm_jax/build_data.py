"""Builds one of the audio TFDS datasets, offline (the `tfds build` CLI needs Apache Beam).

  python -m musiclm_jax.build_data fma/small_16k --manual_dir ~/fma --data_dir ~/tensorflow_datasets
  python -m musiclm_jax.build_data musiccaps/16k --manual_dir ~/musiccaps
  python -m musiclm_jax.build_data synthetic_music/16k
  python -m musiclm_jax.build_data rendered_scores/demo

--data_dir defaults to the tasks' own (musiclm_jax.data.audio_tasks.tfds_data_dir: $MUSICLM_TFDS_DIR,
else ~/tensorflow_datasets); --manual_dir to TFDS's <data_dir>/downloads/manual. Prints
the split sizes and what was skipped; the full list is in the dataset's metadata.json.
"""
import argparse
import sys

import tensorflow_datasets as tfds

from musiclm_jax.data import (audio_tasks)  # also registers the fma, musiccaps, synthetic_music, rendered_scores builders
from musiclm_jax.data import tfds_audio


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("name", help="dataset/config, e.g. fma/small_16k")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--manual_dir", default=None)
  args = parser.parse_args(argv)
  data_dir = audio_tasks.tfds_data_dir(args.data_dir)
  try:
    builder = tfds.builder(args.name, data_dir=data_dir)
  except Exception as error:  # pylint: disable=broad-except
    print(f"error: cannot make a builder for {args.name!r}: {error}", file=sys.stderr)
    return 2
  try:
    tfds_audio.prepare(builder, args.manual_dir)
  except (FileNotFoundError, ValueError, AssertionError) as error:
    print(f"error: {args.name}: {error}", file=sys.stderr)
    return 2
  print(f"{args.name} in {builder.data_dir}")
  for split, info in builder.info.splits.items():
    print(f"  {split}: {info.num_examples} examples")
  metadata = builder.info.metadata or {}
  if metadata.get("skipped_counts"):
    print(f"  skipped: {metadata['skipped_counts']} (each file and reason in metadata.json)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
