"""The sampling roofline: bytes and FLOPs of one decode step of a tiny stage model against a
hand count, per chip on a mesh, the slower of memory and compute, the plan row's fields and
tables, and (with libtpu) the `plan` command's sampling row."""
import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import pytest
from jax.sharding import AbstractMesh

from musiclm_jax.core import partitioning
from musiclm_jax.planning import plan_table, roofline, tpu_slices
from musiclm_jax.stages import stage_model, token_layout, transformer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V, E, H, D, F, LAYERS, T = 100, 16, 2, 8, 32, 3, 20


def _model(**config):
  cfg = transformer.TransformerConfig(vocab_size=V, emb_dim=E, num_heads=H, head_dim=D,
                                      mlp_dim=F, num_layers=LAYERS, dtype="bfloat16", **config)
  return stage_model.DecoderOnlyModel(transformer.DecoderOnlyTransformer(cfg),
                                      stage=token_layout.TINY.stage("coarse"))


def _boxed_params(model):
  return jax.eval_shape(lambda rng: model.get_initial_variables(
      rng, {"decoder_input_tokens": (1, T)}), jax.random.key(0))["params"]


NUM_PARAMS = (LAYERS * (4 * E * H * D + 3 * E * F + 2 * E)  # q k v out, wi_0 wi_1 wo, 2 norms
              + V * E + E * V + E + H * 32)                 # embedding, logits, norm, relpos


def _hand_flops(batch):
  per_layer = (2 * batch * E * H * D * 4     # q, k, v and out projections
               + 2 * batch * E * F * 3       # gated MLP: wi_0, wi_1, wo
               # scores and values over all T cache positions, and over the step's own key
               # and value, which join the softmax apart from the cache
               + 2 * batch * H * (T + 1) * D * 2)
  return LAYERS * per_layer + 2 * batch * E * V  # + logits; the embedding is a gather


def _hand_cache_bytes(batch):
  # key and value [batch, T, H, D] in the bfloat16 compute dtype, key_valid bool [batch, T]
  # and cache_index int32 [batch], per layer.
  return LAYERS * batch * (2 * T * H * D * 2 + T + 4)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_a_decode_step_reads_parameters_and_cache_and_multiplies_as_counted_by_hand(
    scan_layers):
  model = _model(scan_layers=scan_layers)
  params = nn.meta.unbox(_boxed_params(model))
  step = roofline.decode_step(model, params, batch=2, length=T)
  assert step.param_bytes == NUM_PARAMS * 4  # float32 storage, read as stored
  assert step.cache_bytes == _hand_cache_bytes(2)
  assert step.flops == _hand_flops(2)
  # 2·N·batch also counts the embedding (a gather) and the norms / relpos table.
  assert step.analytic_flops == 2 * (2 * NUM_PARAMS + 4 * LAYERS * H * D * T)
  assert 0.8 < step.flops / step.analytic_flops < 1
  # TINY coarse: 50 Hz x 2 coarse levels.
  assert step.tokens_per_second == 100


def test_on_a_mesh_each_chip_reads_its_parameter_shard_and_its_examples_cache():
  model = _model()
  boxed = _boxed_params(model)
  mesh = AbstractMesh((1, 4, 1), partitioning.MESH_AXES)
  shardings = partitioning.logical_to_shardings(mesh, boxed, partitioning.logical_axis_rules())
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        nn.meta.unbox(boxed), shardings)
  relpos = H * 32  # [heads, buckets]: heads go to the model axis (1 here), so it stays whole
  per_chip_params = ((NUM_PARAMS - relpos) / 4 + relpos) * 4
  four = roofline.decode_step(model, params, batch=4, length=T, mesh=mesh)
  assert four.param_bytes == per_chip_params
  assert four.cache_bytes == _hand_cache_bytes(4) / 4  # one example per chip
  assert four.flops == _hand_flops(4) / 4
  # One example cannot split over 4 chips: each holds its whole cache.
  one = roofline.decode_step(model, params, batch=1, length=T, mesh=mesh)
  assert one.param_bytes == per_chip_params and one.cache_bytes == _hand_cache_bytes(1)
  # Tensor parallelism splits one example's keys and values by head (H = 2 over 2 chips).
  tensor = AbstractMesh((1, 1, 2), partitioning.MESH_AXES)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  one = roofline.decode_step(model, params, batch=1, length=T, mesh=tensor)
  assert one.cache_bytes == LAYERS * (2 * T * H * D * 2 / 2 + T + 4)
  assert one.flops == _hand_flops(1) / 2


def _step(bytes_, flops, batch=8, tokens_per_second=25.0):
  return roofline.DecodeStep(batch, bytes_, 0, flops, flops, tokens_per_second)


def test_the_step_time_is_the_slower_of_reading_and_multiplying():
  v5e = tpu_slices.CHIPS["v5e"]
  assert v5e.hbm_bandwidth == 819e9 and tpu_slices.CHIPS["v4"].hbm_bandwidth == 1228e9
  # 819 MB at 819 GB/s: 1 ms; 197 GFLOP at 197 TFLOP/s: 1 ms.
  assert roofline.step_seconds(_step(819e6, 1e9), v5e) == (pytest.approx(1e-3), "memory")
  assert roofline.step_seconds(_step(1e6, 394e9), v5e) == (pytest.approx(2e-3), "compute")
  fields = roofline.fields(_step(819e6, 1e9, batch=8, tokens_per_second=25.0), v5e, chips=8)
  assert fields["steps_per_10s"] == 250 and fields["bound"] == "memory"
  assert fields["seconds_per_10s"] == pytest.approx(0.25)  # 250 steps of 1 ms
  assert fields["realtime_factor"] == pytest.approx(8 * 10 / 0.25)
  assert fields["chip_seconds_per_clip"] == pytest.approx(0.25 * 8 / 8)


@pytest.mark.parametrize("layout, rates", [
    (token_layout.PAPER, {"semantic": 25, "coarse": 200, "fine": 400}),
    (dataclasses.replace(token_layout.PAPER, coarse_levels=3),
     {"semantic": 25, "coarse": 150, "fine": 450})])
def test_decode_steps_per_second_of_audio_come_from_the_token_layout(layout, rates):
  assert {s: roofline.tokens_per_second(layout.stage(s)) for s in rates} == rates


def _sample_row(stage, slice_name, step_ms_by_batch):
  tpu_slice = tpu_slices.parse_slice(slice_name)
  chip = tpu_slice.spec
  rate = roofline.tokens_per_second(token_layout.PAPER.stage(stage))
  steps = tuple(_step(ms * 1e-3 * chip.hbm_bandwidth, 1e6, batch, rate)
                for batch, ms in step_ms_by_batch.items())
  result = plan_table.Compiled("sample", 0, 0, 0, 0, 0, None, decode=steps)
  return plan_table.row(f"{stage} paper", tpu_slice, {"data": 1, "fsdp": tpu_slice.num_chips,
                                                      "model": 1},
                        8, result, 430_000_000, None, {}, stage=stage)


def test_sampling_rows_carry_the_roofline_and_render_it_end_to_end(tmp_path):
  rows = [_sample_row("semantic", "v5e-8", {1: 0.4, 8: 0.4}),
          _sample_row("coarse", "v5e-8", {1: 0.5, 8: 0.5}),
          _sample_row("fine", "v5e-8", {1: 0.5, 8: 0.5})]
  row = rows[2]
  assert row["stage"] == "fine" and row["hbm_gb_per_s"] == 819
  assert [e["batch"] for e in row["decode"]] == [1, 8]
  assert set(row["decode"][1]) >= {
      "param_mib", "cache_mib", "gflop", "analytic_gflop", "step_ms", "bound",
      "steps_per_10s", "seconds_per_10s", "realtime_factor"}
  assert row["decode"][1]["steps_per_10s"] == 4000
  assert row["decode"][1]["seconds_per_10s"] == pytest.approx(4000 * 0.5e-3)
  (e2e_1, e2e_8) = roofline.end_to_end(rows)
  total = 250 * 0.4e-3 + 2000 * 0.5e-3 + 4000 * 0.5e-3
  assert e2e_8["total_s"] == pytest.approx(total)
  assert e2e_8["realtime_factor"] == pytest.approx(80 / total)
  assert e2e_1["realtime_factor"] == pytest.approx(10 / total)
  assert (e2e_8["dominant"], e2e_8["dominant_bound"]) == ("fine", "memory")
  # Through JSON lines, as plan_paper.sh renders them.
  path = tmp_path / "rows.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  text = plan_table.render(str(path))
  assert f"| fine paper | v5e-8 | 1x8x1 | 8 | {409.5e6 / 2**20:.0f} | 0 | 819 | 0.500 |" in text
  assert (f"| v5e-8 | 8 | 0.10 | 1.00 | 2.00 | 3.10 | {80 / total:.1f} | yes | fine "
          "(memory-bound, 4000 steps per 10 s) |") in text
  # Without all three stages there is no end-to-end table.
  assert "end to end" not in plan_table.markdown_table(rows[:2])


@pytest.mark.skipif(not tpu_slices.libtpu_available(),
                    reason="libtpu is not installed (pip install -e '.[tpu]'): no TPU compiler")
def test_plan_writes_the_roofline_into_a_stage_sampling_row(tmp_path):
  out = tmp_path / "plan.jsonl"
  result = subprocess.run(
      [sys.executable, "-m", "musiclm_jax.plan", "--gin_file=models/semantic/tiny.gin",
       "--gin_file=runs/plan.gin", "--gin.BATCH_SIZE=8", "--gin.planning.plan.slices=['v5e-8']",
       "--gin.planning.plan.steps=['sample']", "--gin.planning.plan.name='semantic tiny'",
       f"--gin.planning.plan.output_file='{out}'"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = [json.loads(line) for line in out.read_text().splitlines()]
  assert (row["step"], row["stage"], row["verdict"]) == ("sample", "semantic", "fits")
  one, eight = row["decode"]
  assert (one["batch"], eight["batch"]) == (1, 8)
  # Parameters over 8 chips: the row's own per-chip argument bytes (parameters + batch).
  assert eight["param_mib"] * 2**20 <= row["argument_gib"] * 2**30
  assert eight["gflop"] == pytest.approx(8 * one["gflop"], rel=0.01)
  assert eight["steps_per_10s"] == 250 and eight["realtime_factor"] > one["realtime_factor"]
  assert "Sampling roofline, per chip and decode step:" in result.stdout
