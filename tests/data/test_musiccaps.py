"""The `musiccaps` TFDS builder, on a fake manual download the tests write."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from musiclm_jax.data import musiccaps
from musiclm_jax.data import tfds_audio
from tests import fixtures_audio as fx

tfds.disable_progress_bar()
RATE = 16000
CONFIG = musiccaps.MusicCapsConfig(name="test", sample_rate=RATE, min_seconds=fx.MIN_SECONDS)


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  return fx.make_musiccaps_tree(str(tmp_path_factory.mktemp("musiccaps_manual")), RATE)


@pytest.fixture(scope="module")
def built(manual_dir, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds_audio.prepare(musiccaps.Musiccaps(config=CONFIG, data_dir=data_dir), manual_dir)
  return tfds.builder("musiccaps/test:1.0.0", data_dir=data_dir)


def _examples(builder, split):
  return {ex["ytid"].decode(): ex for ex in builder.as_dataset(split=split).as_numpy_iterator()}


def test_csv_with_tricky_captions_reads_back_exactly(manual_dir):
  rows = musiccaps.read_captions(f"{manual_dir}/musiccaps-public.csv")
  assert [r["ytid"] for r in rows] == [r[0] for r in fx.MUSICCAPS_ROWS]
  assert rows[0]["caption"] == fx.TRICKY_CAPTION
  assert rows[0]["aspect_list"] == ["lo-fi", "rock'n'roll", "piano"]
  assert rows[0]["audioset_positive_labels"] == ["/m/0140xf", "/m/02cjck"]
  assert rows[0]["is_audioset_eval"] is True and rows[1]["is_audioset_eval"] is False


def test_bad_csv_value_is_an_error_naming_file_and_line(tmp_path):
  fx.write_musiccaps_csv(str(tmp_path), [{"ytid": "a"},
                                         {"ytid": "b", "is_audioset_eval": "maybe"}])
  with pytest.raises(ValueError,
                     match=r"musiccaps-public.csv, row 2 \(line 5\): is_audioset_eval: .*'maybe'"):
    musiccaps.read_captions(str(tmp_path / "musiccaps-public.csv"))


def test_splits_follow_is_audioset_eval(built):
  assert set(_examples(built, "eval")) == set(fx.MUSICCAPS_PRESENT["eval"])
  assert set(_examples(built, "train")) == set(fx.MUSICCAPS_PRESENT["train"])


def test_features_keep_the_csv_values(built):
  ex = _examples(built, "eval")["-dash_1"]
  assert ex["caption"].decode() == fx.TRICKY_CAPTION
  assert [a.decode() for a in ex["aspect_list"]] == ["lo-fi", "rock'n'roll", "piano"]
  assert [a.decode() for a in ex["audioset_positive_labels"]] == ["/m/0140xf", "/m/02cjck"]
  assert (ex["start_s"], ex["end_s"], ex["author_id"]) == (0.0, 3.0, 4)
  assert ex["is_balanced_subset"] and ex["is_audioset_eval"]
  assert ex["audio"].dtype == np.int16 and ex["audio"].shape == (3 * RATE,)


def _dominant_hz(pcm):
  spectrum = np.abs(np.fft.rfft(tfds_audio.pcm_to_float(pcm)))
  return np.argmax(spectrum) * RATE / len(pcm)


def test_full_video_is_cut_at_start_and_end(built):
  ex = _examples(built, "train")["b_2"]
  assert ex["audio"].shape == (3 * RATE,)
  assert _dominant_hz(ex["audio"]) == pytest.approx(600.0, abs=1.0)  # only the segment's tone


def test_stereo_44k_mp3_is_mono_at_the_config_rate(built):
  ex = _examples(built, "train")["c3"]
  assert ex["audio"].shape == (3 * RATE,)
  assert _dominant_hz(ex["audio"]) == pytest.approx(600.0, abs=1.0)


def test_metadata_says_which_clips_were_present(built):
  metadata = built.info.metadata
  assert metadata["present_ytids"] == fx.MUSICCAPS_PRESENT
  assert {e["id"]: e["split"] for e in metadata["skipped"]} == fx.MUSICCAPS_MISSING
  assert {e["reason"] for e in metadata["skipped"]} == {"missing"}
  assert metadata["skipped_counts"] == {"missing": 2}
  assert metadata["listed"] == {"train": 3, "eval": 2}


def test_a_split_without_any_clip_is_left_out(tmp_path):
  manual = tmp_path / "manual"
  fx.write_audio(str(manual / "audio" / "only.wav"), fx.tone(3.0, RATE), RATE)
  fx.write_musiccaps_csv(str(manual), [{"ytid": "only", "is_audioset_eval": True},
                                       {"ytid": "absent"}])
  builder = tfds_audio.prepare(
      musiccaps.Musiccaps(config=CONFIG, data_dir=str(tmp_path / "tfds")), manual)
  assert set(builder.info.splits) == {"eval"}
  assert builder.info.metadata["present_ytids"] == {"eval": ["only"], "train": []}


def test_missing_csv_is_a_clear_error(tmp_path):
  (tmp_path / "audio").mkdir()
  (tmp_path / "audio" / "x.wav").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="musiccaps-public.csv does not exist"):
    tfds_audio.prepare(musiccaps.Musiccaps(config=CONFIG, data_dir=str(tmp_path / "t")),
                       tmp_path)
