"""Running a recipe of commands: each step once, skipped when its outputs say it is done.

A step is a command (`python -m ...`) plus the files it must leave behind. It counts as done
when its marker records the same command and every output exists, so a rerun after a kill
redoes only the unfinished steps (the trainers themselves resume from their newest
checkpoint), and a changed recipe redoes the steps whose command changed.
"""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Mapping, Optional, Sequence

from musiclm_jax.core import files


@dataclasses.dataclass(frozen=True)
class Step:
  name: str
  description: str
  module: str  # run as `python -m module *args`
  args: tuple[str, ...]
  outputs: tuple[str, ...]  # paths that exist once the step is done
  env: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def command(self) -> list[str]:
    return [sys.executable, "-m", self.module, *self.args]

  def fingerprint(self) -> str:
    text = json.dumps([self.module, self.args, sorted(self.env.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]

  def shell_line(self) -> str:
    """The step as one copy-pasteable shell line (what the README documents)."""
    env = " ".join(f"{k}={_quote(v)}" for k, v in sorted(self.env.items()))
    line = " ".join(["python", "-m", self.module, *(_quote(a) for a in self.args)])
    return f"{env} {line}" if env else line


def _quote(arg: str) -> str:
  if all(c.isalnum() or c in "-_=./:,%@" for c in arg):
    return arg
  if not any(c in arg for c in '"$`\\!'):  # gin's '...' strings read best inside "..."
    return f'"{arg}"'
  return "'" + arg.replace("'", "'\\''") + "'"


class StepFailed(RuntimeError):
  pass


def _marker(state_dir: str, step: Step) -> str:
  return os.path.join(state_dir, f"{step.name}.done")


def is_done(state_dir: str, step: Step) -> bool:
  marker = _marker(state_dir, step)
  if not os.path.isfile(marker) or not all(os.path.exists(p) for p in step.outputs):
    return False
  with open(marker) as f:
    return json.load(f).get("fingerprint") == step.fingerprint()


def recorded_seconds(steps: Sequence[Step], state_dir: str) -> dict[str, float]:
  """{step: seconds} from the markers of the steps that are done, in whichever run."""
  seconds = {}
  for step in steps:
    if is_done(state_dir, step):
      with open(_marker(state_dir, step)) as f:
        seconds[step.name] = json.load(f).get("seconds")
  return seconds


def run_steps(steps: Sequence[Step], state_dir: str, cwd: str,
              only: Optional[Sequence[str]] = None, log=print) -> dict[str, float]:
  """Runs the steps not done yet, in order; returns {step: seconds} of those it ran.

  The child's output streams straight to this process's (its progress lines, steps/s, ETA).
  A failing step raises StepFailed naming it and its log-worthy exit code; the markers of
  the steps before it stay, so the rerun starts at the failed step.
  """
  os.makedirs(state_dir, exist_ok=True)
  timings = {}
  for i, step in enumerate(steps, 1):
    if only and step.name not in only:
      continue
    prefix = f"[demo {i}/{len(steps)}] {step.name}"
    if is_done(state_dir, step):
      log(f"{prefix}: done already, skipped")
      continue
    log(f"{prefix}: {step.description}\n    {step.shell_line()}")
    start = time.time()
    result = subprocess.run(step.command(), cwd=cwd, env={**os.environ, **step.env})
    seconds = time.time() - start
    if result.returncode != 0:
      raise StepFailed(f"step {step.name!r} failed with exit code {result.returncode} after "
                       f"{seconds:.0f} s: {step.shell_line()}")
    missing = [p for p in step.outputs if not os.path.exists(p)]
    if missing:
      raise StepFailed(f"step {step.name!r} exited 0 but did not write {missing}")
    # Whole or absent: a torn marker would stop every rerun at is_done's json.load.
    files.write_text(_marker(state_dir, step),
                     json.dumps({"fingerprint": step.fingerprint(), "seconds": seconds}))
    timings[step.name] = seconds
    log(f"{prefix}: finished in {seconds:.0f} s")
  return timings
