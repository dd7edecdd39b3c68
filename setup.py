"""musiclm_jax: MusicLM (text -> music) in JAX/Flax, T5X-style, TPU-pod ready."""
import setuptools

# Versions known to work together on Python 3.11 (see README "Installation").
# sentencepiece 0.2.1: newer releases break `import seqio` once apache-beam pins protobuf 6.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",
    "seqio==0.0.20",
    "sentencepiece==0.2.1",
    "clu==0.0.12",
    "gin-config==0.5.0",
    "librosa==0.11.0",
    "soundfile==0.14.0",
    "numpy==2.4.6",
    # Spectrogram images of the listening report.
    "matplotlib==3.11.2",
    # tensorflow-datasets 4.9.10 imports it but declares it only for Python < 3.9.
    "importlib_resources==7.1.0",
    # rendered_scores: music21's corpus (scores) and pretty-midi's wheel (the TimGM6mb
    # General MIDI soundfont); basic-pitch's transcription model runs on onnxruntime.
    "music21==10.5.1",
    "pretty-midi==0.2.11.post0",
    "onnxruntime==1.32.0",
]

EXTRAS = {
    "test": ["pytest==9.2.0", "pytest-timeout==2.4.0", "hypothesis==6.170.15",
             # Two workers, one per core (scripts/test.sh): one runs the demo's end-to-end
             # test while the other runs the rest of the suite.
             "pytest-xdist==3.8.0", "execnet==2.1.2",
             # Drives Debian's chromium (+ chromium-driver) in the listening-page test; 4.38 is
             # the newest whose certifi floor the registry satisfies.
             "selenium==4.38.0"],
    "beam": ["apache-beam[tfrecord]==2.77.0"],
    "tpu": ["jax[tpu]==0.10.2"],
    # What t5x, airio and jestimator need next to our pins. Those three are published on
    # GitHub only and go in without their dependencies (their metadata names git URLs,
    # tensorflow-cpu and tfds-nightly): README "t5x drives the stages".
    "t5x": ["fiddle==0.3.1", "grain==0.2.12", "cached-property==2.0.1"],
}

setuptools.setup(
    name="musiclm_jax",
    version="0.1.0",
    description="MusicLM (text to music) as a JAX/Flax framework that trains at TPU-pod scale.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["musiclm_jax", "musiclm_jax.*"]),
    # The gin configs ship inside the package, so a wheel install finds `--gin_file=models/...`.
    package_data={"musiclm_jax": ["gin/*/*.gin", "gin/*/*/*.gin", "gin/*/*/*/*.gin"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
