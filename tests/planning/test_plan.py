"""Planning for TPU slices: slice names, abstract batches, fit advice, and (with libtpu) the
`musiclm_jax.plan` command compiling the real train step of a tiny stage for a v5e-4 slice."""
import json
import os
import subprocess
import sys

import pytest
import seqio

from musiclm_jax.planning import plan_table, aot, tpu_slices
from musiclm_jax.data.audio_feature_converter import AudioFeatureConverter
from musiclm_jax.planning.tpu_slices import GIB

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name, chips, topology", [
    ("v4-32", 16, "v4:2x2x4"), ("v4-128", 64, "v4:4x4x4"), ("v5e-256", 256, "v5e:16x16"),
    ("v5litepod-16", 16, "v5e:4x4"), ("v5p-8", 4, "v5p:2x2x1"), ("v6e-8", 8, "v6e:2x4")])
def test_slice_names_map_to_chips_and_topologies(name, chips, topology):
  tpu_slice = tpu_slices.parse_slice(name)
  assert (tpu_slice.num_chips, tpu_slice.topology) == (chips, topology)


@pytest.mark.parametrize("name, message", [
    ("v4-30", "v4 slices come in sizes"), ("v9-8", "expected <chip>-<size>"),
    ("v5e", "expected <chip>-<size>")])
def test_bad_slice_names_are_explained(name, message):
  with pytest.raises(ValueError, match=message):
    tpu_slices.parse_slice(name)


def test_abstract_inputs_come_from_the_runs_feature_converter():
  shapes = aot.abstract_inputs(seqio.PrefixLMFeatureConverter,
                                    {"inputs": 12, "targets": 751}, 256, {})
  assert {k: v.shape for k, v in shapes.items()} == {
      k: (256, 763) for k in ("decoder_input_tokens", "decoder_target_tokens",
                              "decoder_loss_weights", "decoder_causal_attention")}
  audio = aot.abstract_inputs(AudioFeatureConverter, {"audio": 16000}, 8,
                                   {"text": "string"})
  assert {k: (v.shape, str(v.dtype)) for k, v in audio.items()} == {
      "audio": ((8, 16000), "float32")}


def _compiled(argument_gib, temp_gib, step="train"):
  return plan_table.Compiled(step, int(argument_gib * GIB), int(argument_gib * GIB),
                           int(argument_gib * GIB), int(temp_gib * GIB), 0, 1e12)


def test_a_step_that_does_not_fit_names_the_knobs():
  mesh = {"data": 16, "fsdp": 1, "model": 1}
  # State replicated on 16 chips, activations of 4 examples per chip: 8 + 24 > 16 GiB.
  knobs = {"remat": "TransformerConfig.remat", "dtype": "TransformerConfig.dtype"}
  verdict = plan_table.fix_advice(_compiled(8, 24), 16 * GIB, mesh, knobs, batch_per_chip=4)
  assert verdict == (
      "over by 16.0 GiB: fsdp over all chips (mesh_shape (1, -1, 1)): state 8.0 -> ~0.5 GiB; "
      "or bfloat16 compute (TransformerConfig.dtype = 'bfloat16'): ~half the activations; "
      "or remat (TransformerConfig.remat = True): activations are 24.0 GiB; "
      "or trainer.train.num_microbatches x4 (or a 4x smaller batch per chip)")
  assert plan_table.fix_advice(_compiled(1, 2), 16 * GIB, mesh, knobs, 4) == "fits"
  # Sharded already, no switch left, one example per chip: only more chips per example help.
  verdict = plan_table.fix_advice(_compiled(20, 1), 16 * GIB,
                                   {"data": 1, "fsdp": 16, "model": 1}, {}, batch_per_chip=1)
  assert verdict == ("over by 5.0 GiB: more chips per example: tensor parallelism "
                     "(mesh model axis)")


def test_rows_render_as_one_markdown_table(tmp_path):
  tpu_slice = tpu_slices.parse_slice("v5e-256")
  mesh = {"data": 1, "fsdp": 256, "model": 1}
  row = plan_table.row("semantic paper", tpu_slice, mesh, 256, _compiled(1, 2), 430_000_000,
                        256 * 763, knobs={})
  assert row["needed_gib"] == pytest.approx(3.0) and row["headroom_gib"] == pytest.approx(13.0)
  assert row["analytic_tflop"] == pytest.approx(6 * 430e6 * 256 * 763 / 256 / 1e12)
  assert row["ideal_step_ms"] == pytest.approx(1e12 / 197e12 * 1e3)
  path = tmp_path / "rows.jsonl"
  path.write_text(json.dumps(row) + "\n" + json.dumps(dict(row, step="sample", temp_gib=None))
                  + "\n")
  lines = plan_table.render(str(path)).splitlines()
  assert len(lines) == 4 and lines[0].startswith("| model | slice | mesh d x f x m |")
  assert lines[2].startswith("| semantic paper | v5e-256 | 1x256x1 | 256 | train | 430 |")
  assert "| — |" in lines[3]


@pytest.mark.skipif(not tpu_slices.libtpu_available(),
                    reason="libtpu is not installed (pip install -e '.[tpu]'): no TPU compiler")
@pytest.mark.parametrize("knobs, max_ratio", [
    ((), 1.1),
    (("--gin.TransformerConfig.scan_layers=True", "--gin.TransformerConfig.remat='full'",
      "--gin.TransformerConfig.attention='blockwise'",
      "--gin.TransformerConfig.attention_block_size=128"), 1.7)])
def test_plan_compiles_the_real_train_step_for_a_tpu_slice(tmp_path, knobs, max_ratio):
  out = tmp_path / "plan.jsonl"
  result = subprocess.run(
      [sys.executable, "-m", "musiclm_jax.plan", "--gin_file=models/semantic/tiny.gin",
       "--gin_file=runs/plan.gin", "--gin.TransformerConfig.num_layers=2",
       "--gin.TransformerConfig.emb_dim=64", "--gin.TransformerConfig.mlp_dim=128",
       "--gin.BATCH_SIZE=8", "--gin.planning.plan.slices=['v5e-4']",
       "--gin.planning.plan.steps=['train']", "--gin.planning.plan.name='semantic tiny'",
       f"--gin.planning.plan.output_file='{out}'", *knobs],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = [json.loads(line) for line in out.read_text().splitlines()]
  assert (row["slice"], row["chips"], row["mesh"], row["step"]) == ("v5e-4", 4, "1x4x1", "train")
  assert row["verdict"] == "fits" and 0 < row["needed_gib"] < 1
  # Matmul FLOPs, loops counted, against 6·N·tokens + attention: the token embedding is in
  # N but is a gather, so a step without recomputation lands just under 1. Full remat adds
  # one forward of every layer (4/3 on the projections) and blockwise attention's backward
  # recomputes its scores once more (5/3 on attention, which dominates this tiny model).
  assert 0.8 < row["flops_ratio"] <= max_ratio, row["flops_ratio"]
  if knobs:
    assert row["flops_ratio"] > 1.1
  assert row["ideal_tokens_per_s_per_chip"] > 0
  assert "| semantic tiny | v5e-4 | 1x4x1 | 8 | train |" in result.stdout


def test_a_step_xla_refuses_for_lack_of_hbm_still_gets_a_row():
  error = RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                       "required for HLO temporaries (16.63G) exceeds available HBM (15.75G).")
  result = plan_table.Compiled.out_of_memory("train", error, state_bytes=GIB, input_bytes=0)
  assert result.temp_bytes == int(16.63 * GIB) and result.flops is None
  assert result.needed_bytes == GIB + int(16.63 * GIB)
  verdict = plan_table.fix_advice(result, 16 * GIB, {"data": 1, "fsdp": 256, "model": 1},
                                   {"remat": "TransformerConfig.remat"}, batch_per_chip=1)
  # Over XLA's 15.75G, not the nominal 16 GiB: the runtime keeps some HBM for itself.
  assert verdict == ("over by 1.9 GiB: remat (TransformerConfig.remat = True): activations "
                     "are 16.6 GiB; or more chips per example: tensor parallelism (mesh model "
                     "axis)")
  # Refused, it never "fits", even where the byte sum stays under the chip's nominal HBM.
  close = plan_table.Compiled.out_of_memory("train", RuntimeError(
      "HLO temporaries (15.9G) exceeds available HBM (15.75G)"), state_bytes=0, input_bytes=0)
  assert close.needed_bytes < 16 * GIB
  assert plan_table.fix_advice(close, 16 * GIB, {"data": 1, "fsdp": 256, "model": 1}, {},
                                batch_per_chip=1).startswith("over by 0.1 GiB")
  with pytest.raises(RuntimeError, match="something else"):
    plan_table.Compiled.out_of_memory("train", RuntimeError("something else"), 0, 0)
