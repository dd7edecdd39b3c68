"""VGGish as published (tensorflow/models, research/audioset/vggish), rebuilt independently of
the Flax port: the network in plain TF ops after `vggish_slim.define_vggish_slim`, the front
end in float64 numpy after `vggish_input.waveform_to_examples` and `mel_features`, with the
constants of `vggish_params`. Nothing here imports `musiclm_jax`.
"""
import numpy as np
import tensorflow as tf

SAMPLE_RATE = 16000
WINDOW_SECONDS, HOP_SECONDS = 0.025, 0.010
NUM_BANDS, MEL_MIN_HZ, MEL_MAX_HZ = 64, 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_SECONDS = EXAMPLE_HOP_SECONDS = 0.96
NUM_FRAMES = 96

# slim.repeat(..., scope="conv3") names its layers conv3/conv3_1, conv3/conv3_2.
CONV_SCOPES = ("conv1", "conv2", "conv3/conv3_1", "conv3/conv3_2", "conv4/conv4_1",
               "conv4/conv4_2")
FC_SCOPES = ("fc1/fc1_1", "fc1/fc1_2", "fc2")
POOL_AFTER = {"conv1", "conv2", "conv3/conv3_2", "conv4/conv4_2"}


def embeddings(examples, checkpoint) -> np.ndarray:
  """float `[n, 96, 64]` log-mel examples -> `[n, 128]`, weights read by their slim names."""
  reader = tf.train.load_checkpoint(checkpoint)

  def weight(scope, leaf):
    return tf.constant(reader.get_tensor(f"vggish/{scope}/{leaf}"))

  net = tf.reshape(tf.constant(examples, tf.float32), [-1, NUM_FRAMES, NUM_BANDS, 1])
  for scope in CONV_SCOPES:
    net = tf.nn.conv2d(net, weight(scope, "weights"), strides=1, padding="SAME")
    net = tf.nn.relu(net + weight(scope, "biases"))
    if scope in POOL_AFTER:
      net = tf.nn.max_pool2d(net, ksize=2, strides=2, padding="SAME")
  net = tf.reshape(net, [net.shape[0], -1])  # slim.flatten: NHWC, row-major
  for scope in FC_SCOPES:
    net = tf.matmul(net, weight(scope, "weights")) + weight(scope, "biases")
    # fc2 is the embedding: activation_fn=None in the current release.
    net = tf.nn.relu(net) if scope != "fc2" else net
  return net.numpy()


def _frames(data, length, hop):
  """Frames along axis 0, no padding: an incomplete last frame is dropped, as the release's."""
  count = 1 + (data.shape[0] - length) // hop
  return data[hop * np.arange(count)[:, None] + np.arange(length)]


def _hertz_to_mel(hertz):
  return 1127.0 * np.log(1.0 + hertz / 700.0)


def mel_matrix(num_spectrogram_bins) -> np.ndarray:
  """`[bins, 64]` triangles that are linear in HTK mel; the DC bin gets no weight."""
  bins_mel = _hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, num_spectrogram_bins))
  edges = np.linspace(_hertz_to_mel(MEL_MIN_HZ), _hertz_to_mel(MEL_MAX_HZ), NUM_BANDS + 2)
  matrix = np.empty((num_spectrogram_bins, NUM_BANDS))
  for band in range(NUM_BANDS):
    lower, center, upper = edges[band:band + 3]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    matrix[:, band] = np.maximum(0.0, np.minimum(rising, falling))
  matrix[0, :] = 0.0
  return matrix


def examples(wav) -> np.ndarray:
  """float `[samples]` mono at 16 kHz -> `[n, 96, 64]`: the whole clip's log-mel, cut into
  non-overlapping 0.96 s examples."""
  window = int(round(SAMPLE_RATE * WINDOW_SECONDS))
  hop = int(round(SAMPLE_RATE * HOP_SECONDS))
  fft_length = 2 ** int(np.ceil(np.log2(window)))
  periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi / window * np.arange(window))
  frames = _frames(np.asarray(wav, np.float64), window, hop)
  spectrogram = np.abs(np.fft.rfft(frames * periodic_hann, fft_length))
  log_mel = np.log(spectrogram @ mel_matrix(spectrogram.shape[1]) + LOG_OFFSET)
  example_length = int(round(EXAMPLE_SECONDS / HOP_SECONDS))
  example_hop = int(round(EXAMPLE_HOP_SECONDS / HOP_SECONDS))
  return _frames(log_mel, example_length, example_hop)
