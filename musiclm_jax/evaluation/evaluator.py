"""Evaluate a generation run against a captioned reference split (MusicLM Sec. 5.1's metrics).

  evaluation.evaluate(generations_dir="out/gen", reference="musiccaps/16k:1.0.0",
                      reference_split="eval")   # -> out/gen/metrics.json (+ metrics.md)

Metrics, each where its model is available:
  fad_musicnn     FAD on musicnn's 200-d penultimate layer per 3 s window (offline weights)
  fad_vggish      FAD on VGGish's 128-d embeddings per 0.96 s (`vggish_weights`: the released
                  weights, downloaded by the user); the paper's FAD_VGG
  fad_mulan       FAD on our MuLan's audio embeddings (`mulan_model_dir`)
  kld_softmax / kld_sigmoid   KL(reference || generated) of musicnn's 50-tag distributions
                  (metrics/kl.py). Paired per clip by `reference_id` when every generation has
                  one that is present in the references (audiocraft's pairing); otherwise each
                  generation is compared with the mean distribution of the reference set
                  (`pairing`, and `unpaired`: how many generations lacked their reference).
  mcc             MuLan cycle consistency: cosine of each generation's text and audio
                  embeddings (and mcc_reference, the same on the references: the ceiling)
  codec           SoundStream reconstruction of the reference clips (`codec_model_dir` +
                  `codec_config`): SI-SNR (dB, higher is better) and multi-scale mel distance
FAD∞ per embedder when either set has fewer windows than the embedding has dimensions
(`fad_infinity=None`, the default; True / False: always / never). A generation run that
kept the best of N candidates by MuLan is recorded under `selection`, and MCC measured with
that same MuLan is flagged `selection_biased`. Reference embeddings are cached per clip
(`cache_dir`), so re-evaluating another run against the same split embeds only the new clips.
"""
import os
from typing import Optional

import gin
import numpy as np
from absl import logging

from musiclm_jax.core import files
from musiclm_jax.inference import listening_page, text_to_audio
from musiclm_jax.evaluation import embedders as embedders_lib
from musiclm_jax.evaluation import eval_sets, fad, kl, metrics_report
from musiclm_jax.evaluation.embedding_cache import EmbeddingCache
from musiclm_jax.evaluation.mulan_cycle import cycle_consistency

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"


def _embed(embedder, clips: eval_sets.ClipSet, cache, prefix: str) -> list:
  wavs = clips.at_rate(embedder.sample_rate)
  return embedders_lib.embed_clips(embedder, wavs, cache, [f"{prefix}{i}" for i in clips.ids])


def fad_metrics(embedder, references, generations, cache, reference_prefix: str,
                with_infinity: Optional[bool] = None) -> dict:
  """FAD over every window embedding of every clip, and FAD∞ beside it: always with
  `with_infinity=True`, never with False, and by default (None) when either set has fewer
  windows than the embedding has dimensions, where FAD at that n is mostly its 1/n bias."""
  ref = np.concatenate(_embed(embedder, references, cache, reference_prefix))
  gen = np.concatenate(_embed(embedder, generations, None, ""))
  result = {"fad": fad.fad(ref, gen), "reference_windows": int(ref.shape[0]),
            "generated_windows": int(gen.shape[0]), "dim": int(ref.shape[1])}
  small = min(ref.shape[0], gen.shape[0]) < ref.shape[1]
  if with_infinity or (with_infinity is None and small):
    try:
      result["fad_inf"] = fad.fad_infinity(ref, gen)
    except ValueError as error:  # too few generated windows for two subset sizes
      if with_infinity:
        raise
      result["fad_inf_skipped"] = str(error)
  return result


def classifier_kl(classifier, references, generations, cache, reference_prefix: str) -> dict:
  """KL of the classifier's clip distributions in both conventions (see module docstring)."""
  ref_logits = _embed(classifier, references, cache, reference_prefix)
  gen_logits = _embed(classifier, generations, None, "")
  index = {clip_id: i for i, clip_id in enumerate(references.ids)}
  unpaired = sum(r is None or r not in index for r in generations.reference_ids)
  paired = unpaired == 0
  result = {"pairing": "reference_id" if paired else "set_mean", "unpaired": unpaired}
  if unpaired:
    logging.warning("KL: %d of %d generations have no reference clip of their own "
                    "(reference_id missing or absent from the references): every generation "
                    "is compared with the reference set's mean distribution", unpaired,
                    len(generations))
  for convention in kl.CONVENTIONS:
    ref = np.stack([kl.clip_distribution(x, convention) for x in ref_logits])
    gen = np.stack([kl.clip_distribution(x, convention) for x in gen_logits])
    if paired:
      ref = ref[[index[r] for r in generations.reference_ids]]
    else:
      ref = np.repeat(ref.mean(axis=0, keepdims=True), len(gen), axis=0)
    values = kl.kl_metrics(ref, gen, convention)
    result[convention] = {k: v for k, v in values.items() if k != "per_example"}
  return result


def selection_summary(selections) -> Optional[dict]:
  """How best-of-N picked the generations (None when none was reranked)."""
  picked = [s for s in selections if s is not None]
  if not picked:
    return None
  rerankers = {(s["reranker"] or {}).get("model", "unknown") for s in picked}
  return {"reranked_clips": len(picked),
          "num_candidates": sorted({s["num_candidates"] for s in picked}),
          "scorer": sorted(rerankers),
          "scorer_dirs": sorted({str((s["reranker"] or {}).get("dir")) for s in picked})}


def selection_biased(selections, mulan_dir: Optional[str]) -> bool:
  """Whether MCC judges clips that the same MuLan picked as best of N (or a MuLan the run
  did not record, which cannot be ruled out)."""
  for selection in selections:
    if selection is None:
      continue
    scorer_dir = (selection["reranker"] or {}).get("dir")
    if scorer_dir is None or mulan_dir is None or (
        os.path.realpath(scorer_dir) == os.path.realpath(mulan_dir)):
      return True
  return False


def mulan_cycle(mulan, clips: eval_sets.ClipSet) -> float:
  """Mean MCC of clips against their own texts (clips may differ in length)."""
  rate = mulan.model.config.sample_rate
  audio = np.concatenate([mulan.embed_audio(wav[None]) for wav in clips.at_rate(rate)])
  return float(cycle_consistency(mulan.embed_text(clips.texts), audio).mean())


def codec_reconstruction(codec, clips: eval_sets.ClipSet) -> dict:
  """Mean SI-SNR and mel distance of `codec.reconstruct` over clips at the codec's rate."""
  from musiclm_jax.evaluation import codec_metrics  # pylint: disable=import-outside-toplevel
  rate = codec.config.sample_rate
  si_snr, mel = [], []
  for wav in clips.at_rate(rate):
    estimate = np.asarray(codec.reconstruct(wav[None]))
    si_snr.append(float(codec_metrics.si_snr(wav[None], estimate)[0]))
    mel.append(float(codec_metrics.mel_distance(wav[None], estimate, rate)[0]))
  return {"si_snr_db": float(np.mean(si_snr)), "mel_distance": float(np.mean(mel)),
          "num_clips": len(si_snr)}


@gin.configurable(module="evaluation")
def evaluate(*, generations_dir: str, reference: str, reference_split: str,
             max_references: Optional[int] = None, id_key: Optional[str] = None,
             text_key: Optional[str] = None, musicnn_model: str = "MTT_musicnn",
             musicnn_dir: Optional[str] = None, vggish_weights: Optional[str] = None,
             mulan_model=None, mulan_model_dir: Optional[str] = None,
             codec_config=None, codec_model_dir: Optional[str] = None,
             fad_infinity: Optional[bool] = None, cache_dir: Optional[str] = None,
             output_dir: Optional[str] = None) -> str:
  """Computes every available metric; writes metrics.json and metrics.md into `output_dir`
  (default: the generation folder, next to its index.html). Returns the metrics.json path."""
  from musiclm_jax.evaluation import musicnn  # pylint: disable=import-outside-toplevel
  generations = eval_sets.read_generations(generations_dir)
  references, reference_record = eval_sets.read_references(
      reference, reference_split, max_references, id_key, text_key)
  wanted = [r for r in generations.reference_ids if r is not None]
  present = set(references.ids)
  reference_record["referenced_ids_missing"] = sorted(set(wanted) - present)
  cache = EmbeddingCache(cache_dir) if cache_dir else None
  prefix = f"{reference}/{reference_split}/"
  logging.info("evaluating %d generations against %d reference clips", len(generations),
               len(references))

  tagger = musicnn.MusicnnTagger.load(musicnn_model, musicnn_dir)
  fads = {f"musicnn_{musicnn_model}": fad_metrics(
      embedders_lib.musicnn_embedder(tagger, "penultimate"), references, generations, cache,
      prefix, fad_infinity)}
  if vggish_weights:
    from musiclm_jax.evaluation import vggish  # pylint: disable=import-outside-toplevel
    fads["vggish"] = fad_metrics(embedders_lib.vggish_embedder(vggish.VGGishEmbedder.load(
        vggish_weights)), references, generations, cache, prefix, fad_infinity)
  mcc = {}
  if mulan_model_dir:
    if mulan_model is None:
      raise ValueError("evaluate.mulan_model_dir is set but evaluate.mulan_model is not "
                       "(add --gin_file=models/mulan/<size>.gin and bind it to %MODEL)")
    from musiclm_jax.mulan import mulan_tokenizer  # pylint: disable=import-outside-toplevel
    mulan = mulan_tokenizer.MuLanEmbedder.from_model_dir(mulan_model_dir, mulan_model)
    fads["mulan"] = fad_metrics(embedders_lib.mulan_embedder(mulan), references, generations,
                                cache, prefix, fad_infinity)
    mcc = {"mcc": mulan_cycle(mulan, generations), "mcc_reference": mulan_cycle(mulan, references),
           "mulan_dir": mulan.source,
           "selection_biased": selection_biased(generations.selections, mulan.source)}
  codec_result = None
  if codec_model_dir:
    if codec_config is None:
      raise ValueError("evaluate.codec_model_dir is set but evaluate.codec_config is not "
                       "(add --gin_file=models/soundstream/<size>.gin and bind it)")
    from musiclm_jax.codec.acoustic_tokenizer import Codec  # pylint: disable=import-outside-toplevel
    codec_result = codec_reconstruction(Codec.from_checkpoint(codec_model_dir, codec_config),
                                        references)
  kld = classifier_kl(embedders_lib.musicnn_embedder(tagger, "logits"), references,
                      generations, cache, prefix)

  report = {"generations_dir": os.path.abspath(generations_dir),
            "num_generations": len(generations), "reference": reference_record,
            "selection": selection_summary(generations.selections),
            "fad": fads, "kl": kld, "mcc": mcc or None,
            "codec": codec_result,
            "cache": None if cache is None else {"dir": cache.directory, "hits": cache.hits,
                                                 "misses": cache.misses}}
  output_dir = output_dir or generations_dir
  os.makedirs(output_dir, exist_ok=True)
  json_path = os.path.join(output_dir, METRICS_JSON)
  files.write_json(json_path, report, indent=2)
  files.write_text(os.path.join(output_dir, METRICS_MD), metrics_report.markdown(report))
  _relink_listening_page(output_dir)
  logging.info("Wrote %s", json_path)
  return json_path


def _relink_listening_page(folder: str) -> None:
  """A listening page written before the metrics existed is rewritten to link them."""
  records_path = os.path.join(folder, text_to_audio.RECORDS)
  if os.path.exists(os.path.join(folder, "index.html")) and os.path.exists(records_path):
    listening_page.write_page(folder, text_to_audio.finished_records(folder))
