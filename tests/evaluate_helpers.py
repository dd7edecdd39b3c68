"""Generation folders, noisy copies and a MusicCaps-shaped download for the evaluation tests.

`REFERENCES` is a synthetic_music config of 6.5 s clips (two musicnn windows each) whose
tasks `synthetic_music_{audio,pairs}_eval_test` are registered on import; `held_out_clips`
renders clips of the same distribution that are not in it, standing in for generations.
"""
import json
import os

import numpy as np
import soundfile as sf

from musiclm_jax.data import audio_tasks, music_synth, synthetic_music
from tests import fixtures_audio as fx

RATE = 16000
REFERENCES = synthetic_music.SyntheticMusicConfig(
    name="eval_test", description="evaluation tests: 6.5 s clips at 16 kHz",
    sample_rate=RATE, seconds=6.5, num_train=2, num_validation=12, seed=21)
_, PAIRS_TASK = audio_tasks.register_synthetic_music_tasks(REFERENCES)


def reference_clips(data_dir):
  """(wavs, captions, ids) of the built validation split, in TFDS order."""
  builder = synthetic_music.ensure_built(REFERENCES, data_dir)
  wavs, captions, ids = [], [], []
  for ex in builder.as_dataset(split="validation", shuffle_files=False).as_numpy_iterator():
    wavs.append(ex["audio"].astype(np.float32) / 32768.0)
    captions.append(ex["caption"].decode())
    ids.append(str(ex["clip_index"]))
  return wavs, captions, ids


def held_out_clips(count, seconds=REFERENCES.seconds, seed=99):
  """(wavs, captions) from another seed: same distribution, clips the references lack."""
  clips = [music_synth.render_clip(i, seed, RATE, seconds) for i in range(count)]
  return [c[0] for c in clips], [c[1] for c in clips]


def add_noise(wav, snr_db, seed=0):
  noise = np.random.default_rng(seed).normal(size=wav.shape)
  scale = np.sqrt(np.mean(wav ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
  return (wav + scale * noise).astype(np.float32)


def write_generation_folder(folder, wavs, texts, rate=RATE, reference_ids=None,
                            subtype="FLOAT"):
  """The infer contract: wavs, generations.jsonl and an index.html."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "generations.jsonl"), "w", encoding="utf-8") as f:
    for i, (wav, text) in enumerate(zip(wavs, texts)):
      name = f"gen_{i:03d}.wav"
      sf.write(os.path.join(folder, name), wav, rate, subtype=subtype)
      row = {"id": f"gen{i}", "text": text, "file": name, "sample_rate": rate,
             "seconds": len(wav) / rate, "seed": i}
      if reference_ids is not None:
        row["reference_id"] = reference_ids[i]
      f.write(json.dumps(row) + "\n")
  with open(os.path.join(folder, "index.html"), "w", encoding="utf-8") as f:
    f.write("<html><body>listening page</body></html>\n")
  return folder


# MusicCaps-shaped: five eval clips present, one eval clip gone, two train clips.
MUSICCAPS_EVAL = ("yt-a", "yt_b", "ytc", "yt-d", "yt_e")
MUSICCAPS_GONE = "yt-gone"
MUSICCAPS_SECONDS = 3.5


def make_musiccaps_download(root):
  """A manual dir: musiccaps-public.csv with the synthetic captions, audio/<ytid>.wav."""
  rows = []
  ids = [(y, True) for y in MUSICCAPS_EVAL] + [(MUSICCAPS_GONE, True), ("yt-t1", False),
                                               ("yt-t2", False)]
  for index, (ytid, is_eval) in enumerate(ids):
    wav, caption, _ = music_synth.render_clip(index, 5, RATE, MUSICCAPS_SECONDS)
    rows.append({"ytid": ytid, "start_s": 0, "end_s": MUSICCAPS_SECONDS, "caption": caption,
                 "is_audioset_eval": is_eval})
    if ytid != MUSICCAPS_GONE:
      fx.write_audio(os.path.join(root, "audio", ytid + ".wav"), wav, RATE)
  os.makedirs(root, exist_ok=True)
  fx.write_musiccaps_csv(root, rows)
  return root
