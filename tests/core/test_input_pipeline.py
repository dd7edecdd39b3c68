"""Tests for musiclm_jax.core.input_pipeline and musiclm_jax.core.checkpoint_iterator.

Everything runs on CPU with a tiny in-memory seqio task; the 8-device mesh test
runs in a subprocess because XLA_FLAGS must be set before jax initialises.
"""

import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import seqio
import tensorflow as tf

from musiclm_jax.core import checkpoint_iterator
from musiclm_jax.core import input_pipeline

TASK = "musiclm_jax_test_input_pipeline_tiny"
NUM_EXAMPLES = 300
LENGTHS = {"inputs": 4, "targets": 10}
# PrefixLM concatenates inputs and targets into one decoder sequence.
PACKED_LENGTH = LENGTHS["inputs"] + LENGTHS["targets"]
BATCH = 8


def _tiny_dataset_fn(split, shuffle_files, seed=None):
  """Examples i -> inputs [3] and targets [1 + i % 9], all ids >= 2 (0=PAD, 1=EOS).

  from_tensor_slices + map (no from_generator) so tf.data can checkpoint it.
  """
  del split, shuffle_files, seed
  ids = tf.range(NUM_EXAMPLES, dtype=tf.int32)
  return tf.data.Dataset.from_tensor_slices(ids).map(lambda i: {
      "inputs": tf.stack([i % 7, i % 5, i % 3]) + 2,
      "targets": (tf.range(1 + i % 9, dtype=tf.int32) + i) % 50 + 2,
  })


def _register_task():
  # Idempotent: pytest may import this module more than once (and the
  # registry is process-global).
  if TASK in seqio.TaskRegistry.names():
    return
  vocab = seqio.PassThroughVocabulary(size=64, eos_id=1)
  seqio.TaskRegistry.add(
      TASK,
      source=seqio.FunctionDataSource(
          _tiny_dataset_fn, splits=["train"],
          num_input_examples={"train": NUM_EXAMPLES}),
      preprocessors=[seqio.preprocessors.append_eos],
      output_features={
          "inputs": seqio.Feature(vocab, add_eos=False),
          "targets": seqio.Feature(vocab, add_eos=True),
      },
      shuffle_buffer_size=64,
  )


_register_task()


def _dataset(**kwargs):
  args = dict(mixture_or_task_name=TASK, task_feature_lengths=LENGTHS, split="train",
              batch_size=BATCH, feature_converter_cls=seqio.PrefixLMFeatureConverter)
  args.update(kwargs)
  return input_pipeline.get_dataset(**args)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(expected, actual):
  assert len(expected) == len(actual)
  for a, b in zip(expected, actual):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
      assert a[key].dtype == b[key].dtype


PREFIX_LM_FEATURES = {"decoder_input_tokens", "decoder_target_tokens",
                      "decoder_loss_weights", "decoder_causal_attention"}


def test_batches_have_prefix_lm_features_and_shapes():
  it = input_pipeline.DatasetIterator(_dataset())
  spec = it.element_spec
  assert set(spec) == PREFIX_LM_FEATURES
  for shape, dtype in spec.values():
    assert shape == (BATCH, PACKED_LENGTH) and dtype == np.int32
  batch = next(it)
  assert set(batch) == PREFIX_LM_FEATURES
  for value in batch.values():
    assert isinstance(value, np.ndarray) and value.shape == (BATCH, PACKED_LENGTH)
  # Loss only on targets: a target token at t that is an `inputs` token (its
  # input position t + 1 lies in the bidirectional prefix) has zero weight.
  prefix = batch["decoder_causal_attention"][:, 1:]
  assert not np.any(batch["decoder_loss_weights"][:, :-1] * prefix)
  assert np.all(prefix.sum(1) >= 1) and np.all(batch["decoder_loss_weights"].sum(1) > 0)
  # Input tokens are the targets shifted right by one with BOS=0.
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:],
                                batch["decoder_target_tokens"][:, :-1])
  assert np.all(batch["decoder_input_tokens"][:, 0] == 0)


def test_process_sharding_splits_global_batch():
  # Two simulated processes each read half the global batch from disjoint data.
  seen = []
  for index in range(2):
    ds = _dataset(shuffle=False, num_epochs=1, shard_info=seqio.ShardInfo(index, 2))
    batches = list(input_pipeline.DatasetIterator(ds))
    assert batches and all(b["decoder_target_tokens"].shape == (BATCH // 2, PACKED_LENGTH)
                           for b in batches)
    seen.append({tuple(row) for b in batches for row in b["decoder_target_tokens"]})
  assert not seen[0] & seen[1]


def test_fresh_iterators_are_deterministic():
  _assert_same_batches(_take(input_pipeline.DatasetIterator(_dataset()), 5),
                       _take(input_pipeline.DatasetIterator(_dataset()), 5))


def test_save_restore_resumes_bit_identically(tmp_path):
  it = input_pipeline.DatasetIterator(_dataset(shuffle=True))
  _take(it, 7)
  prefix = str(tmp_path / "iter" / "ckpt")
  it.save(prefix)
  # 60 batches of 8 > 300 examples: crosses an epoch boundary (reshuffle) too.
  expected = _take(it, 60)

  fresh = input_pipeline.DatasetIterator(_dataset(shuffle=True))
  next(fresh)  # restore must override any position, not just a fresh one
  fresh.restore(prefix)
  _assert_same_batches(expected, _take(fresh, 60))

  # And it equals an uninterrupted run (the checkpoint dropped nothing that was
  # buffered in shuffle/prefetch).
  uninterrupted = input_pipeline.DatasetIterator(_dataset(shuffle=True))
  _assert_same_batches(expected, _take(uninterrupted, 67)[7:])


def test_save_accounts_for_full_prefetch_and_parallel_map(tmp_path):
  # Plain tf.data: let the prefetch buffer and parallel map fill up well
  # beyond what was consumed, then save. The buffered elements must be in the
  # checkpoint (or re-produced), never skipped.
  def make():
    ds = tf.data.Dataset.range(1000).shuffle(100, seed=1)
    ds = ds.map(lambda x: {"x": x * 3}, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(4, drop_remainder=True).prefetch(16)

  it = input_pipeline.DatasetIterator(make())
  consumed = _take(it, 3)
  time.sleep(0.3)  # background threads fill the buffers
  it.save(str(tmp_path / "ckpt"))
  expected = _take(it, 20)
  restored = input_pipeline.DatasetIterator(make())
  restored.restore(str(tmp_path / "ckpt"))
  _assert_same_batches(expected, _take(restored, 20))
  _assert_same_batches(consumed + expected, _take(input_pipeline.DatasetIterator(make()), 23))


def test_uncheckpointable_pipeline_fails_loudly(tmp_path):
  # from_generator state cannot be serialised; silently skipping it would
  # break exact resume, so saving must fail with an actionable message.
  ds = tf.data.Dataset.from_generator(
      lambda: iter(range(10)), output_signature=tf.TensorSpec((), tf.int64)).batch(2)
  it = input_pipeline.DatasetIterator(ds)
  next(it)
  with pytest.raises(ValueError, match="from_generator"):
    it.save(str(tmp_path / "ckpt"))


def test_restore_missing_checkpoint_names_path(tmp_path):
  it = input_pipeline.DatasetIterator(_dataset())
  with pytest.raises(FileNotFoundError, match="nowhere"):
    it.restore(str(tmp_path / "nowhere"))


def test_unknown_task_error_names_it():
  with pytest.raises(ValueError, match="no_such_task_xyz") as info:
    _dataset(mixture_or_task_name="no_such_task_xyz")
  assert TASK in str(info.value) or "Registered" in str(info.value)


def test_indivisible_batch_size_error_names_batch_size():
  with pytest.raises(ValueError, match="batch_size"):
    _dataset(batch_size=8, shard_info=seqio.ShardInfo(0, 3))


@pytest.mark.parametrize("async_save", [True, False])
def test_orbax_checkpoint_manager_roundtrip(tmp_path, async_save):
  options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=async_save)
  state = {"w": jnp.arange(12.0).reshape(3, 4), "step": jnp.int32(3)}

  it = input_pipeline.DatasetIterator(_dataset())
  _take(it, 3)
  manager = ocp.CheckpointManager(tmp_path, options=options)
  manager.save(3, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      dataset=checkpoint_iterator.DatasetIteratorSave(it)))
  # Read on BEFORE the async save finishes: the iterator position must have
  # been captured inside manager.save(), so these are the batches to resume at.
  expected = _take(it, 5)
  manager.wait_until_finished()
  manager.close()

  step_dir = tmp_path / "3"
  assert (step_dir / "dataset" / "process_0-of-1.index").exists()
  assert not any("tmp" in p.name for p in tmp_path.iterdir())  # committed

  new_manager = ocp.CheckpointManager(tmp_path, options=options)
  assert new_manager.latest_step() == 3
  new_it = input_pipeline.DatasetIterator(_dataset())
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = new_manager.restore(3, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      dataset=checkpoint_iterator.DatasetIteratorRestore(new_it)))
  new_manager.close()
  assert restored.dataset is new_it
  jax.tree.map(np.testing.assert_array_equal, restored.state, state)
  _assert_same_batches(expected, _take(new_it, 5))


def test_iterator_state_saved_inside_temporary_step_dir(tmp_path, monkeypatch):
  # Atomicity: the handler writes into orbax's temporary step directory, which
  # only becomes the step once all items (incl. async arrays) are committed.
  seen = []
  handler_cls = checkpoint_iterator.DatasetIteratorCheckpointHandler
  original = handler_cls.save

  def spy(self, directory, args):
    seen.append(str(directory))
    return original(self, directory, args)

  monkeypatch.setattr(handler_cls, "save", spy)
  it = input_pipeline.DatasetIterator(_dataset())
  manager = ocp.CheckpointManager(
      tmp_path, options=ocp.CheckpointManagerOptions(enable_async_checkpointing=True))
  manager.save(0, args=ocp.args.Composite(
      state=ocp.args.StandardSave({"x": jnp.ones(4)}),
      dataset=checkpoint_iterator.DatasetIteratorSave(it)))
  assert len(seen) == 1, "handler.save must have run before manager.save returned"
  assert ".orbax-checkpoint-tmp" in seen[0]
  manager.wait_until_finished()
  manager.close()
  assert (tmp_path / "0" / "dataset" / "process_0-of-1.index").exists()


def test_to_global_batch_single_device():
  it = input_pipeline.DatasetIterator(_dataset())
  mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "model"))
  shardings = input_pipeline.batch_shardings(mesh, it.element_spec)
  local = next(it)
  batch = input_pipeline.to_global_batch(local, shardings)
  for name, array in batch.items():
    assert isinstance(array, jax.Array) and array.shape == (BATCH, PACKED_LENGTH)
    np.testing.assert_array_equal(np.asarray(array), local[name])


def test_batch_shardings_skips_missing_axes():
  mesh = jax.make_mesh((1,), ("data",))
  spec = {"a": ((8, 3), np.int32), "b": jax.ShapeDtypeStruct((8,), np.float32)}
  shardings = input_pipeline.batch_shardings(mesh, spec)
  assert shardings["a"].spec == jax.sharding.PartitionSpec("data", None)
  assert shardings["b"].spec == jax.sharding.PartitionSpec("data")


_EIGHT_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from musiclm_jax.core import input_pipeline
    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "model"))
    local = {"decoder_target_tokens": np.arange(8 * 5, dtype=np.int32).reshape(8, 5)}
    spec = {k: (v.shape, v.dtype) for k, v in local.items()}
    shardings = input_pipeline.batch_shardings(mesh, spec)
    out = input_pipeline.to_global_batch(local, shardings)["decoder_target_tokens"]
    assert out.shape == (8, 5)
    assert out.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
    # data * fsdp = 4 batch shards of 2 rows, each replicated over "model".
    assert out.sharding.shard_shape(out.shape) == (2, 5)
    rows = {s.index[0].start for s in out.addressable_shards}
    assert rows == {0, 2, 4, 6}, rows
    np.testing.assert_array_equal(np.asarray(out), local["decoder_target_tokens"])
    print("OK")
""")


def test_to_global_batch_eight_cpu_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-c", _EIGHT_DEVICE_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


_TWO_PROCESS_SCRIPT = textwrap.dedent("""
    import os, sys
    process_id, port, ckpt_dir, tests_dir = sys.argv[1:]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=2, process_id=int(process_id))
    sys.path.insert(0, tests_dir)
    import test_input_pipeline as T  # registers the tiny task
    import jax.numpy as jnp, numpy as np, orbax.checkpoint as ocp
    from musiclm_jax.core import checkpoint_iterator, input_pipeline

    mesh = jax.make_mesh((2, 2, 1), ("data", "fsdp", "model"))  # 2 procs x 2 devices
    it = input_pipeline.DatasetIterator(T._dataset())  # default shard_info: this process
    assert it.element_spec["decoder_input_tokens"][0] == (T.BATCH // 2, T.PACKED_LENGTH)
    shardings = input_pipeline.batch_shardings(mesh, it.element_spec)
    batch = input_pipeline.to_global_batch(next(it), shardings)
    assert batch["decoder_input_tokens"].shape == (T.BATCH, T.PACKED_LENGTH)

    state = {"w": jax.device_put(jnp.arange(16.0).reshape(4, 4),
                                 jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))}
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=True)
    manager = ocp.CheckpointManager(ckpt_dir, options=options)
    manager.save(1, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        dataset=checkpoint_iterator.DatasetIteratorSave(it)))
    expected = T._take(it, 4)
    manager.wait_until_finished()
    manager.close()
    names = sorted(os.listdir(os.path.join(ckpt_dir, "1", "dataset")))
    assert "process_0-of-2.index" in names and "process_1-of-2.index" in names, names

    new_it = input_pipeline.DatasetIterator(T._dataset())
    manager = ocp.CheckpointManager(ckpt_dir, options=options)
    manager.restore(1, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, state)),
        dataset=checkpoint_iterator.DatasetIteratorRestore(new_it)))
    manager.close()
    T._assert_same_batches(expected, T._take(new_it, 4))
    print("OK", expected[0]["decoder_target_tokens"][0].tolist())
""")


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_shard_data_and_checkpoint_per_process(tmp_path):
  """Two local jax processes: per-process shards, global batch, per-process state files."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  port = str(_free_port())
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  procs = [subprocess.Popen(
      [sys.executable, "-c", _TWO_PROCESS_SCRIPT, str(i), port, str(tmp_path), tests_dir],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=150))
  finally:
    for proc in procs:  # only the processes this test started
      if proc.poll() is None:
        proc.kill()
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0 and "OK" in out, err[-3000:]
  # The two processes read different examples.
  assert outputs[0][0].split("OK")[1] != outputs[1][0].split("OK")[1]
