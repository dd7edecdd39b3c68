"""The `fma` TFDS builder, on a fake manual download the tests write (tests/fixtures_audio.py)."""
import os

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from musiclm_jax.data import audio_tasks  # pylint: disable=unused-import  (registers the tasks)
from musiclm_jax.data import fma
from musiclm_jax.data import tfds_audio
from tests import fixtures_audio as fx

tfds.disable_progress_bar()


def _config(subset="small", name=None):
  return fma.FmaConfig(name=name or f"{subset}_test", subset=subset, sample_rate=16000,
                       min_seconds=fx.MIN_SECONDS)


def _build(config, data_dir, manual_dir):
  tfds_audio.prepare(fma.Fma(config=config, data_dir=str(data_dir)), manual_dir)
  # A fresh builder reads everything back from disk, metadata included.
  return tfds.builder(f"fma/{config.name}:1.0.0", data_dir=str(data_dir))


def _ids(builder, split):
  return {int(ex["track_id"]) for ex in builder.as_dataset(split=split).as_numpy_iterator()}


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  return fx.make_fma_tree(str(tmp_path_factory.mktemp("fma_manual")))


@pytest.fixture(scope="module")
def small(manual_dir, tmp_path_factory):
  return _build(_config(), tmp_path_factory.mktemp("tfds"), manual_dir)


def test_tracks_csv_two_header_rows_and_python_literals(manual_dir):
  path = os.path.join(manual_dir, "fma_metadata", "tracks.csv")
  with open(path, encoding="utf-8", newline="") as f:
    tracks = fma.read_tracks(f, path)
  assert set(tracks) == set(fx.FMA_TRACKS)  # a comment spanning lines is still one row
  assert tracks[5]["title"] == 'Café, "Live" at Ütopia'
  assert tracks[5]["album"] == "Best, of"
  assert fma.literal_list(tracks[2]["tags"], "tags") == ["lo-fi", "rock'n'roll"]
  assert fma.literal_list(tracks[5]["genres"], "genres") == [12, 25]
  assert fma.literal_list("", "tags") == [] and fma.literal_list("[oops", "tags") == []


def test_tracks_csv_without_fma_columns_is_an_error_naming_the_file(tmp_path):
  path = tmp_path / "tracks.csv"
  path.write_text(",track\n,title\ntrack_id,\n1,x\n")
  with open(path, newline="") as f, pytest.raises(ValueError, match=f"{path}.*no column"):
    fma.read_tracks(f, str(path))


def test_splits_hold_the_subset_good_tracks(small):
  for split, ids in fx.FMA_GOOD["small"].items():
    assert _ids(small, split) == ids, split
    assert small.info.splits[split].num_examples == len(ids)


def test_features_come_from_the_metadata(small):
  examples = {int(ex["track_id"]): ex for ex in small.as_dataset(split="train").as_numpy_iterator()}
  food = examples[2]
  assert food["genre_top"] == b"Hip-Hop" and list(food["genres"]) == [b"Hip-Hop"]
  assert list(food["genre_ids"]) == [21]
  assert [t.decode() for t in food["tags"]] == ["lo-fi", "rock'n'roll"]
  assert (food["title"], food["artist"], food["album"]) == (b"Food", b"AWOL",
                                                             b"AWOL - A Way Of Life")
  assert food["license"] == b"Attribution-NonCommercial 3.0"
  assert food["description"].decode() == (
      "Hip-Hop track \"Food\" by AWOL; tags: lo-fi, rock'n'roll.")
  cafe = examples[5]
  assert [g.decode() for g in cafe["genres"]] == ["Rock", "Punk"]
  assert cafe["description"].decode() == (
      'Rock track "Café, "Live" at Ütopia" by Les Élèves; genres: Punk.')
  assert food["audio"].dtype == np.int16 and food["audio"].shape == (3 * 16000,)


def test_stereo_44k_mp3_is_downmixed_and_resampled(small):
  (stereo,) = small.as_dataset(split="validation").as_numpy_iterator()
  assert stereo["track_id"] == 10
  wav = tfds_audio.pcm_to_float(stereo["audio"])
  assert wav.shape == (3 * 16000,)
  assert 0.2 < np.sqrt(np.mean(wav ** 2)) < 0.23  # the 0.3-peak tone, not silence
  spectrum = np.abs(np.fft.rfft(wav))
  assert np.argmax(spectrum) / 3.0 == pytest.approx(200 + 10, abs=1)  # its pitch survived


def test_bad_and_missing_files_are_listed_in_the_metadata(small):
  metadata = small.info.metadata
  skipped = {int(entry["id"]): entry["reason"] for entry in metadata["skipped"]}
  assert skipped == fx.FMA_SKIPPED
  assert metadata["skipped_counts"] == {"too_short": 1, "undecodable": 1, "missing": 1,
                                        "empty": 3}
  assert metadata["listed"] == {"train": 6, "validation": 2, "test": 2}
  by_id = {int(entry["id"]): entry for entry in metadata["skipped"]}
  assert by_id[99134]["file"].endswith(os.path.join("fma_small", "099", "099134.mp3"))
  assert by_id[99134]["split"] == "train"


def test_medium_contains_small(manual_dir, tmp_path):
  medium = _build(_config("medium"), tmp_path, manual_dir)
  for split, ids in fx.FMA_GOOD["medium"].items():
    assert _ids(medium, split) == ids, split


def test_builds_from_the_zips_as_released(tmp_path):
  manual = fx.make_fma_tree(str(tmp_path / "manual"), zipped=True)
  assert not os.path.exists(os.path.join(manual, "fma_small"))
  zipped = _build(_config(name="small_zipped"), tmp_path / "tfds", manual)
  assert _ids(zipped, "train") == fx.FMA_GOOD["small"]["train"]


def test_missing_manual_download_is_a_clear_error(tmp_path):
  (tmp_path / "unrelated.txt").write_text("x")
  with pytest.raises(FileNotFoundError, match="fma_metadata.zip"):
    tfds_audio.prepare(fma.Fma(config=_config(), data_dir=str(tmp_path / "tfds")), tmp_path)


def test_a_split_with_no_usable_file_is_a_clear_error(manual_dir, tmp_path):
  too_long = fma.FmaConfig(name="small_min60", subset="small", min_seconds=60.0)
  with pytest.raises(ValueError, match=r"all 6 files of split 'train' were skipped"):
    tfds_audio.prepare(fma.Fma(config=too_long, data_dir=str(tmp_path)), manual_dir)


def test_raw_audio_tasks_are_registered_for_every_config():
  names = set(seqio.TaskRegistry.names())
  for config in fma.BUILDER_CONFIGS:
    assert {f"fma_audio_{config.name}", f"fma_pairs_{config.name}"} <= names
