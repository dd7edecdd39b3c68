"""The MusicLM recipe as a list of commands, sized for the demo (tiny models, synthetic set).

Every step is a gin entry point a user would run by hand; on a pod the same sequence runs
with the paper gin files, a real data set and the `launch/` wrappers (docs/recipe.md, "The whole
recipe"). Training lengths are the demo's: enough for the tiny models to learn the synthetic
set's structure on 2 CPU cores in about a quarter of an hour, scaled by `steps_scale`.
"""
import dataclasses
import os

from musiclm_jax.demo.step_runner import Step

# The synthetic set the demo builds and everything trains on: 16 kHz, 4 s clips whose
# attributes vary only where the demo prompts do (music_synth.DEMO).
DATASET_CONFIG = "demo"
AUDIO_TASK = f"synthetic_music_audio_{DATASET_CONFIG}"
PAIRS_TASK = f"synthetic_music_pairs_{DATASET_CONFIG}"
CLIP_SAMPLES = 4 * 16000
# Seconds of audio generated per prompt: the semantic stage's whole training crop.
GENERATE_SECONDS = 4.0

TOKEN_TASK = f"synthetic_music_tokens_{DATASET_CONFIG}"

# The share of the stages' training crops conditioned on the caption's MuLan text codes rather
# than the clip's audio codes (musiclm_jax/data/stage_tasks.py): the tiny MuLan's text and audio codes
# differ, and inference conditions on text (docs/architecture.md).
MULAN_TEXT_RATE = 1.0

# Classifier-free guidance for the two stages that read MuLan codes (trained with 10% of the
# conditioning dropped, models/{semantic,coarse}/tiny.gin): at this size it sharpens how much
# the sampled tokens follow the prompt (README, "The main job").
DECODER_PARAMS = {"semantic": {"guidance_scale": 3.0}, "coarse": {"guidance_scale": 3.0}}

TRAIN_STEPS = {"soundstream": 1000, "w2v_bert": 300, "mulan": 500,
               "semantic": 600, "coarse": 2000, "fine": 1200}
# SoundStream's discriminators join for the last fifth of its steps. On 1 s crops the
# reconstruction-only warm-up steps cost 0.24 s, against 0.62 s for a GAN step. A codec with
# 200 warm-up steps loses the register: ranked by pitch, its reconstructions score AUC 0.4 to
# 0.55. With 800 warm-up steps they score 0.94 (README, "The main job").
DISCRIMINATOR_START_SHARE = 0.8
# SoundStream trains on 0.5 s crops (25 frames), half the audio task's 1 s: its step costs in
# proportion to the samples, and on the demo set's 64 held-out clips (4 s, reconstructed
# whole) the codec trained on 0.5 s crops scores as the 1 s one did: register / instrument /
# drums AUC 0.99 / 0.73 / 1.00 against 1.00 / 0.71 / 1.00, mel distance 1.30 against 1.29, in
# 250 s of training instead of 458 on a slow day (bench/codec_attributes.py; bench/README.md
# has the table). At 0.3 s the mel distance rose to 1.75. Measured on synthetic_music only.
SOUNDSTREAM_CROP_SAMPLES = 8000


@dataclasses.dataclass(frozen=True)
class Paths:
  root: str

  def __getattr__(self, name):
    # out.soundstream, out.tfds, ...: one folder per part under the demo's output folder.
    if name.startswith("_"):
      raise AttributeError(name)
    return os.path.join(self.root, name)


def _checkpoint(model_dir: str, steps: int) -> str:
  return os.path.join(model_dir, "checkpoints", str(steps))


def checkpoint_every(steps: int) -> int:
  return max(1, steps // 10)


def _train(name: str, description: str, model_gin: str, task_gin: str, model_dir: str,
           steps: int, env, *extra: str) -> Step:
  # A checkpoint every tenth of the run: a killed demo resumes losing at most 10% of a part's
  # training (each costs well under a second at these sizes).
  return Step(name, description, "musiclm_jax.train",
              (f"--gin_file={model_gin}", "--gin_file=runs/train.gin", f"--gin_file={task_gin}",
               f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
               f"--gin.trainer.train.eval_every={steps}",
               f"--gin.trainer.train.checkpoint_every={checkpoint_every(steps)}", *extra),
              (_checkpoint(model_dir, steps),), env)


# The steps that make the three frozen tokenizers; any data set with a `demo` config and
# `<dataset>_{audio,pairs}_demo` tasks can run them (musiclm_jax/demo/tokenizers.py).
TOKENIZER_STEPS = ("data", "soundstream", "w2v_bert", "kmeans", "mulan", "mulan_rvq")


def steps(output_dir: str, steps_scale: float = 1.0,
          dataset: str = "synthetic_music") -> list[Step]:
  """The recipe; `dataset` changes what the tokenizer steps build and train on (the steps
  after them are the synthetic set's: its prompts and prompt-following judges)."""
  out = Paths(os.path.abspath(output_dir))
  n = {k: max(1, int(round(v * steps_scale))) for k, v in TRAIN_STEPS.items()}
  # Every step reads and writes the demo's own TFDS folder, never ~/tensorflow_datasets.
  env = {"MUSICLM_TFDS_DIR": out.tfds}
  audio = (f"--gin.MIXTURE_OR_TASK_NAME='{dataset}_audio_{DATASET_CONFIG}'",)
  pairs = (f"--gin.MIXTURE_OR_TASK_NAME='{dataset}_pairs_{DATASET_CONFIG}'",)
  return [
      Step("data", f"build the {dataset} captioned-music set (TFDS)", "musiclm_jax.build_data",
           (f"{dataset}/{DATASET_CONFIG}",),
           (os.path.join(out.tfds, dataset, DATASET_CONFIG),), env),
      _train("soundstream", "train the SoundStream codec (GAN)", "models/soundstream/tiny.gin",
             "tasks/synthetic_music_audio.gin", out.soundstream, n["soundstream"], env, *audio,
             "--gin.soundstream.SoundStream.discriminator_start_step="
             f"{int(n['soundstream'] * DISCRIMINATOR_START_SHARE)}",
             f"--gin.TASK_FEATURE_LENGTHS={{'audio': {SOUNDSTREAM_CROP_SAMPLES}}}"),
      _train("w2v_bert", "train w2v-BERT (contrastive + masked prediction)",
             "models/w2v_bert/tiny.gin", "tasks/synthetic_music_audio.gin", out.w2v_bert,
             n["w2v_bert"], env, *audio, "--gin.TASK_FEATURE_LENGTHS={'audio': 32000}"),
      Step("kmeans", "fit the semantic k-means on w2v-BERT features", "musiclm_jax.fit_kmeans",
           ("--gin_file=models/w2v_bert/tiny.gin", "--gin_file=runs/fit_kmeans.gin",
            "--gin_file=tasks/synthetic_music_audio.gin", *audio,
            "--gin.TASK_FEATURE_LENGTHS={'audio': 32000}", f"--gin.MODEL_DIR='{out.w2v_bert}'",
            f"--gin.semantic_tokenizer.fit_kmeans.num_steps={max(1, n['w2v_bert'] // 2)}",
            "--gin.semantic_tokenizer.fit_kmeans.statistics_batches=20"),
           (os.path.join(out.w2v_bert, "semantic_kmeans.npz"),), env),
      _train("mulan", "train MuLan (audio tower + MiniLM text tower, contrastive)",
             "models/mulan/tiny.gin", "tasks/synthetic_music_pairs.gin", out.mulan, n["mulan"],
             env, *pairs),
      Step("mulan_rvq", "fit MuLan's RVQ on whole-clip audio embeddings",
           "musiclm_jax.fit_mulan_rvq",
           ("--gin_file=models/mulan/tiny.gin", "--gin_file=runs/fit_mulan_rvq.gin",
            "--gin_file=tasks/synthetic_music_pairs.gin", *pairs,
            f"--gin.RVQ_TASK_FEATURE_LENGTHS={{'audio': {CLIP_SAMPLES}}}",
            f"--gin.MODEL_DIR='{out.mulan}'"),
           (os.path.join(out.mulan, "mulan_rvq.npz"),), env),
      _cache_tokens(out, env),
      *(_train(stage, f"train the {stage} stage on the cached tokens",
               f"models/{stage}/tiny.gin", "tasks/stage_on_tokens.gin", getattr(out, stage),
               n[stage], {**env, "MUSICLM_SEQIO_CACHE_DIR": out.token_cache},
               f"--gin.TOKEN_TASK='{TOKEN_TASK}'",
               f"--gin.tasks.mulan_text_conditioning.rate={MULAN_TEXT_RATE}")
        for stage in ("semantic", "coarse", "fine")),
      Step("conditioning_index", "index the MuLan code tuples the stages trained on",
           "musiclm_jax.build_conditioning_index",
           ("--gin_file=runs/build_conditioning_index.gin", f"--gin.TOKEN_TASK='{TOKEN_TASK}'",
            f"--gin.OUTPUT='{out.conditioning_index}.npz'",
            f"--gin.tasks.mulan_text_conditioning.rate={MULAN_TEXT_RATE}"),
           (f"{out.conditioning_index}.npz",),
           {**env, "MUSICLM_SEQIO_CACHE_DIR": out.token_cache}),
      Step("prompts", "write the demo prompts (register x instrument x drums)",
           "musiclm_jax.demo.prompts", (f"{out.prompts}.jsonl", str(GENERATE_SECONDS)),
           (f"{out.prompts}.jsonl",), env),
      _generate(out, env, "generate", "text -> audio for the demo prompts; the listening page",
                f"{out.prompts}.jsonl", out.generations),
      Step("evaluate", "FAD / KL (musicnn), MCC (MuLan), codec metrics vs held-out clips",
           "musiclm_jax.evaluate",
           ("--gin_file=runs/evaluate.gin", "--gin_file=models/mulan/tiny.gin",
            "--gin_file=models/soundstream/tiny.gin",
            f"--gin.GENERATIONS_DIR='{out.generations}'", f"--gin.REFERENCE='{PAIRS_TASK}'",
            "--gin.REFERENCE_SPLIT='validation'",
            "--gin.evaluation.evaluate.mulan_model=@mulan.MuLanModel()",
            f"--gin.evaluation.evaluate.mulan_model_dir='{out.mulan}'",
            "--gin.evaluation.evaluate.codec_config=@SoundStreamConfig()",
            f"--gin.evaluation.evaluate.codec_model_dir='{out.soundstream}'"),
           (os.path.join(out.generations, "metrics.json"),), env),
      _report(env, "prompt_following", "does the audio follow its prompt? (vs shuffled prompts)",
              f"{out.prompts}.jsonl", out.generations),
      # The same attributes in wordings no training caption uses (heldout_prompts.py).
      Step("heldout_prompts", "write the held-out prompts (the same attributes, new wordings)",
           "musiclm_jax.demo.heldout_prompts",
           (f"{out.heldout_prompts}.jsonl", str(GENERATE_SECONDS)),
           (f"{out.heldout_prompts}.jsonl",), env),
      _generate(out, env, "generate_heldout", "text -> audio for the held-out prompts",
                f"{out.heldout_prompts}.jsonl", out.generations_heldout),
      _report(env, "prompt_following_heldout",
              "does the audio follow prompts worded unlike training?",
              f"{out.heldout_prompts}.jsonl", out.generations_heldout),
      Step("mulan_following", "does MuLan read both prompt sets' attributes? (before any stage)",
           "musiclm_jax.demo.mulan_following",
           (out.mulan, f"{out.mulan_following}.json", f"{out.prompts}.jsonl",
            f"{out.heldout_prompts}.jsonl", f"--conditioning_index={out.conditioning_index}.npz"),
           (f"{out.mulan_following}.json",), env),
  ]


def _generate(out: Paths, env, name: str, description: str, prompts_file: str,
              output_dir: str) -> Step:
  return Step(name, description, "musiclm_jax.generate",
              ("--gin_file=pipeline/tiny.gin", "--gin_file=runs/generate.gin",
               f"--gin.SOUNDSTREAM_DIR='{out.soundstream}'", f"--gin.MULAN_DIR='{out.mulan}'",
               f"--gin.SEMANTIC_DIR='{out.semantic}'", f"--gin.COARSE_DIR='{out.coarse}'",
               f"--gin.FINE_DIR='{out.fine}'", f"--gin.PROMPTS_FILE='{prompts_file}'",
               f"--gin.pipeline.load.decoder_params={DECODER_PARAMS}",
               f"--gin.pipeline.Parts.conditioning_index_file='{out.conditioning_index}.npz'",
               f"--gin.SECONDS={GENERATE_SECONDS}", f"--gin.INFER_OUTPUT_DIR='{output_dir}'"),
              (os.path.join(output_dir, "index.html"),
               os.path.join(output_dir, "generations.jsonl")), env)


def _report(env, name: str, description: str, prompts_file: str, generations: str) -> Step:
  return Step(name, description, "musiclm_jax.demo.report",
              (generations, prompts_file, str(GENERATE_SECONDS)),
              (os.path.join(generations, "prompt_following.json"),), env)


def _cache_tokens(out: Paths, env) -> Step:
  """seqio's own cache command over the tokenizing task, tokenizers named by environment
  (cache_tasks_main takes no gin flags; musiclm_jax/data/token_tasks.py reads these)."""
  tokenizers = (f"SOUNDSTREAM_DIR='{out.soundstream}'; W2V_BERT_DIR='{out.w2v_bert}'; "
                f"MULAN_DIR='{out.mulan}'")
  return Step("cache_tokens", "pre-tokenize the set with the frozen tokenizers (Beam)",
              "seqio.scripts.cache_tasks_main",
              ("--module_import=musiclm_jax.data.token_tasks", f"--tasks={TOKEN_TASK}",
               f"--output_cache_dir={out.token_cache}",
               "--pipeline_options=--runner=DirectRunner"),
              (os.path.join(out.token_cache, TOKEN_TASK, "info.train.json"),
               os.path.join(out.token_cache, TOKEN_TASK, "info.validation.json")),
              {**env, "MUSICLM_TOKENIZERS_GIN": "tasks/synthetic_music_tokens.gin",
               "MUSICLM_TOKENIZERS_GIN_BINDINGS": tokenizers})
