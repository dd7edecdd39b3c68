"""A non-editable install finds the gin configs: they ship inside the wheel as package data.

Builds the wheel from a copy of the sources, installs it (without dependencies) into a fresh
venv that borrows the test venv's third-party packages, and runs a command and a gin lookup
from a folder that is not the repository.
"""
import os
import shutil
import subprocess
import sys
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(command, cwd, timeout=300, returncode=0):
  result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == returncode, (command, result.stdout[-2000:], result.stderr[-3000:])
  return result


def test_wheel_carries_the_gin_configs(tmp_path):
  source = tmp_path / "source"
  source.mkdir()
  shutil.copy(os.path.join(REPO, "setup.py"), source)
  shutil.copytree(os.path.join(REPO, "musiclm_jax"), source / "musiclm_jax",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", str(tmp_path / "dist"), str(source)], cwd=tmp_path)
  wheel = next((tmp_path / "dist").glob("musiclm_jax-*.whl"))

  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
  python = str(venv / "bin" / "python")
  _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
       cwd=tmp_path)
  site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
              cwd=tmp_path).stdout.strip()
  # The dependencies come from the test venv; its editable finder of the repository is a .pth
  # hook there, which a path added this way does not run.
  with open(os.path.join(site, "borrowed_dependencies.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")

  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  where = _run([python, "-c", "import musiclm_jax; print(musiclm_jax.__file__)"], cwd=elsewhere)
  assert where.stdout.strip().startswith(site), where.stdout
  # absl's --help exits 1 after printing the usage.
  help_text = _run([python, "-m", "musiclm_jax.train", "--help"], cwd=elsewhere,
                   returncode=1).stdout
  assert "--gin_file" in help_text
  lookup = _run([python, "-c",
                 "from musiclm_jax.core import gin_utils; import gin\n"
                 "print(gin_utils.resolve_gin_file('models/semantic/tiny.gin'))\n"
                 "gin_utils.parse_gin(['models/semantic/tiny.gin'], [])\n"
                 "print(gin.query_parameter('TransformerConfig.num_layers'))"],
                cwd=elsewhere).stdout.splitlines()
  assert lookup[0] == os.path.join(site, "musiclm_jax", "gin", "models", "semantic", "tiny.gin")
  assert int(lookup[1]) > 0
