"""t5x-style command-line gin: `--gin_file`, `--gin.NAME=value`, `--gin_search_paths`."""
import os
import sys
import traceback
from typing import Callable, Sequence

import gin
from absl import app, flags

from musiclm_jax.core import distributed

PACKAGE_GIN_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "gin"))
# Code whose `raise` statements are checks of the configuration or the input: this package's,
# and gin's (an unknown configurable or parameter in a binding).
_CHECKING_CODE = tuple(os.path.normpath(os.path.dirname(module.__file__)) + os.sep
                       for module in (sys.modules["musiclm_jax"], gin))


def define_flags() -> None:
  flags.DEFINE_multi_string("gin_file", [], "Gin files, applied in order; relative paths are "
                            "looked up in --gin_search_paths and the repository's gin/.")
  flags.DEFINE_multi_string("gin_bindings", [], "Individual gin bindings (also --gin.NAME=V).")
  flags.DEFINE_list("gin_search_paths", [], "Directories searched for --gin_file.")


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """`--gin.MODEL_DIR="'/tmp/x'"` -> `--gin_bindings=MODEL_DIR='/tmp/x'` (t5x's spelling)."""
  out = []
  for arg in argv:
    if arg.startswith("--gin.") and "=" in arg:
      name, value = arg[len("--gin."):].split("=", 1)
      out.append(f"--gin_bindings={name} = {value}")
    else:
      out.append(arg)
  return out


def resolve_gin_file(name: str, search_paths: Sequence[str] = ()) -> str:
  """Absolute path of a --gin_file: as given, else in the search paths, else in gin/.

  Resolved here rather than by gin, whose resource reader misfires when the working
  directory holds a folder named like the file's (e.g. an output folder `runs/`).
  """
  candidates = [name] if os.path.isabs(name) else [
      os.path.join(p, name) for p in [*search_paths, PACKAGE_GIN_DIR, "."]]
  for path in candidates:
    if os.path.isfile(path):
      return os.path.abspath(path)
  raise FileNotFoundError(f"--gin_file={name} not found; looked in "
                          f"{[os.path.dirname(c) or '.' for c in candidates]}")


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> None:
  """Parses files then bindings; `include` statements search `search_paths`, then gin/."""
  for path in [*search_paths, PACKAGE_GIN_DIR]:
    gin.add_config_file_search_path(path)
  files = [resolve_gin_file(name, search_paths) for name in gin_files]
  gin.parse_config_files_and_bindings(files, gin_bindings, finalize_config=False)


def one_line(error: BaseException) -> str:
  """The error as a single line (gin appends 'In call to configurable' context lines)."""
  return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def raised_by_a_check(error: BaseException) -> bool:
  """Whether `error` comes from a check that names its culprit: a `raise` statement in this
  package or in gin, or a missing file the OS names. The same exception type raised inside
  JAX, flax, orbax or numpy (or by a failed operation in our own code) is a bug, not a bad
  configuration, and must keep its traceback."""
  if isinstance(error, FileNotFoundError) and error.filename:
    return True
  frames = traceback.extract_tb(error.__traceback__)
  if not frames:
    return False
  origin = frames[-1]
  return (os.path.normpath(origin.filename).startswith(_CHECKING_CODE)
          and (origin.line or "").lstrip().startswith("raise"))


def run_main(program: str, run: Callable[[], object],
             user_errors: tuple[type, ...] = (ValueError, FileNotFoundError),
             multi_process: bool = True) -> None:
  """The whole life of a gin entry point: flags, (multi-process) distributed init, gin,
  `run()`; prints what `run` returns when it is text (e.g. the path of the output it wrote).
  With `multi_process`, the `--coordinator_address/--num_processes/--process_id` flags (or a
  TPU VM slice) join this process to the others first (musiclm_jax/core/distributed.py).

  A mistake in the configuration or data exits 2 with one line naming the cause: an error of
  a `user_errors` type (MeshError is a ValueError) that one of our checks raised
  (`raised_by_a_check`), or any such error while the flags and gin files are read. Anything
  else is a bug and keeps its traceback.
  """
  if "gin_file" not in flags.FLAGS:
    define_flags()
  if multi_process and "coordinator_address" not in flags.FLAGS:
    distributed.define_flags()

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    configuring = True
    try:
      if multi_process:
        distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                               flags.FLAGS.process_id)
      parse_gin(flags.FLAGS.gin_file, flags.FLAGS.gin_bindings, flags.FLAGS.gin_search_paths)
      configuring = False
      result = run()
    except user_errors as error:
      if not (configuring or raised_by_a_check(error)):
        raise
      print(f"{program}: error: {one_line(error)}", file=sys.stderr)
      sys.exit(2)
    if isinstance(result, str):
      print(result)

  app.run(main, argv=rewrite_gin_args(sys.argv))
