"""The documentation's commands run against the current code, and its names exist.

Every `python -m musiclm_jax...` command in the code blocks of README.md, docs/*.md,
launch/README.md and bench/README.md is extracted and checked:

- each `--gin_file=` (and `MUSICLM_TOKENIZERS_GIN=` / `--tokenizers_gin=`, also in seqio's
  `cache_tasks_main` commands) names a file under `musiclm_jax/gin/` (or under the command's
  `--gin_search_paths`), and each `--module_import=` a module that exists;
- each distinct entry module is started once, from a temporary working directory, and asked
  for its help; the help must list every flag the docs pass to that module;
- `python -m musiclm_jax.demo --dry_run` runs, and the commands it prints pass the same checks.

How the modules answer a request for help: absl's `app.run` prints every flag for
`--helpfull` and exits 1 (`absl.app.HelpfullFlag` calls `_exit_before_main(1)`; `--help` is
the same, with only the main module's flags, which for the gin entry points are none: their
flags live in `core/gin_utils.py`). argparse (`build_data`) exits 0 after `--help`. The demo's
sub-steps take positional arguments only: `demo.prompts` and `demo.heldout_prompts` are run
for real into the temporary directory; `demo.report` and `demo.mulan_following` print their
usage and exit 1 on any other arguments.

The docs must also name no file, gin config or module that does not exist, and none of the
names the code had before it moved into subpackages.
"""
import concurrent.futures
import dataclasses
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO, "musiclm_jax", "gin")
DOCS = ["README.md", *sorted(os.path.relpath(p, REPO)
                             for p in glob.glob(os.path.join(REPO, "docs", "*.md"))),
        "launch/README.md", "bench/README.md"]
ENTRY_PREFIX = "musiclm_jax"
TIMEOUT = 180

# How each entry module answers for help: (arguments, exit code, stream, text that must be in
# it). Any module not listed is an absl program.
ABSL_HELP = (["--helpfull"], 1, "stdout", "--[no]helpfull")
HELP = {
    "musiclm_jax.build_data": (["--help"], 0, "stdout", "usage:"),
    "musiclm_jax.demo.report": (["--help"], 1, "stderr",
                                "usage: python -m musiclm_jax.demo.report"),
    "musiclm_jax.demo.mulan_following": (["--help"], 1, "stderr",
                                         "usage: python -m musiclm_jax.demo.mulan_following"),
}
# Run for real instead: (arguments, relative to the temporary working directory; the file
# it must write).
RUN = {"musiclm_jax.demo.prompts": (["prompts.jsonl", "4.0"], "prompts.jsonl"),
       "musiclm_jax.demo.heldout_prompts": (["heldout.jsonl", "4.0"], "heldout.jsonl")}

# The names the code had before the subpackages, and text that does not belong in the docs.
STALE = [
    (r"\.\./shared|DESIGN\.md", "refers outside the repository"),
    (r"(?<![\w/])tasks/README|musiclm_jax/data/README", "the data docs are docs/data.md"),
    (r"python -m tasks\b|(?<![\w.])tasks\.build\b",
     "builds are `python -m musiclm_jax.build_data`"),
    (r"musiclm_jax[./]tokens\b", "the token layout is musiclm_jax/stages/token_layout.py"),
    (r"musiclm_jax[./]metrics\b|metrics/embedders", "metrics live in musiclm_jax/evaluation/"),
    (r"musiclm_jax[./]models\b", "the model interface is musiclm_jax/core/base_model.py"),
    (r"\bdemo_(recipe|steps|prompts|report)\b", "the demo modules are musiclm_jax/demo/*.py"),
    (r"\bplan_report\b|\binfer_(inputs|outputs)\b|\bmetrics_text\b|\btext_tokenizer\b",
     "renamed module"),
    (r"\bmulan_tokens\.(py|MuLan)", "the module is mulan/mulan_tokenizer.py"),
    (r"(?<![\w_])codec\.Codec\b", "the Codec is acoustic_tokenizer.Codec"),
    (r"(?<![\w_])inference\.run\(", "the library call is stage_inference.run"),
    (r"(?<![\w/.-])gin/(models|runs|tasks|pipeline)\b|repository's `?gin/",
     "the gin configs are musiclm_jax/gin/ (package data)"),
    (r"(?i)this session|previous session|before this change|until this change|the older code",
     "session history"),
]
REPO_PATH = re.compile(r"(?<![\w./-])((?:musiclm_jax|tests|bench|launch|scripts|docs)/"
                       r"[\w./{},*-]*[\w*}/])")
GIN_NAME = re.compile(r"(?<![\w/.-])((?:models|runs|tasks|pipeline)/[\w/{},*.-]*?\.gin)\b")
DOTTED = re.compile(r"(?<![\w.])(musiclm_jax(?:\.\w+)+)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


@dataclasses.dataclass(frozen=True)
class Command:
  doc: str
  line: int
  env: tuple  # (name, value) pairs set on the command line
  module: str
  args: tuple

  def __str__(self):
    return f"{self.doc}:{self.line}: python -m {self.module} {shlex.join(self.args)}"[:300]


def _read(doc: str) -> str:
  with open(os.path.join(REPO, doc), encoding="utf-8") as f:
    return f.read()


def code_blocks(text: str):
  """(first line number, body) of every fenced block that is not Python or a Dockerfile."""
  for match in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.M | re.S):
    if match.group(1) not in ("python", "dockerfile"):
      yield text.count("\n", 0, match.start(2)) + 1, match.group(2)


def logical_lines(first_line: int, body: str):
  """Lines with their `\\` continuations joined, comment lines dropped."""
  pending, start = "", first_line
  for number, line in enumerate(body.splitlines(), first_line):
    if not pending:
      start = number
      if line.lstrip().startswith("#"):
        continue
    if line.rstrip().endswith("\\"):
      pending += line.rstrip()[:-1] + " "
      continue
    yield start, pending + line
    pending = ""
  if pending:
    yield start, pending


def commands_in(doc: str, text: str) -> list:
  found = []
  for first, body in code_blocks(text):
    for number, line in logical_lines(first, body):
      try:
        tokens = shlex.split(line, comments=True)
      except ValueError as error:
        raise AssertionError(f"{doc}:{number}: cannot split {line!r}: {error}") from error
      for i, token in enumerate(tokens[:-2]):
        if os.path.basename(token).startswith("python") and tokens[i + 1] == "-m":
          end = next((j for j in range(i + 3, len(tokens))
                      if tokens[j] in ("|", "||", "&&", ";")), len(tokens))
          env = tuple(tuple(t.split("=", 1)) for t in tokens[:i]
                      if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", t, re.S))
          found.append(Command(doc, number, env, tokens[i + 2], tuple(tokens[i + 3:end])))
  return found


def doc_commands() -> list:
  return [c for doc in DOCS for c in commands_in(doc, _read(doc))]


# Entry modules of the optional t5x extra: asked for their help only where t5x is installed.
NEEDS_T5X = "musiclm_jax.t5x_bridge"


def entry_modules(commands) -> list:
  have_t5x = importlib.util.find_spec("t5x") is not None
  return sorted({c.module for c in commands if c.module.split(".")[0] == ENTRY_PREFIX
                 and (have_t5x or not c.module.startswith(NEEDS_T5X))})


def flag_values(args, name: str) -> list:
  values = []
  for i, arg in enumerate(args):
    if arg.startswith(f"--{name}="):
      values.append(arg.split("=", 1)[1])
    elif arg == f"--{name}" and i + 1 < len(args):
      values.append(args[i + 1])
  return values


def gin_files_of(command: Command) -> list:
  files = flag_values(command.args, "gin_file")
  env = dict(command.env)
  for value in [env.get("MUSICLM_TOKENIZERS_GIN", ""),
                *flag_values(command.args, "tokenizers_gin")]:
    files += [name.strip() for name in value.split(",") if name.strip()]
  return files


def gin_problems(command: Command) -> list:
  search = [p if os.path.isabs(p) else os.path.join(REPO, p)
            for value in flag_values(command.args, "gin_search_paths")
            for p in value.split(",") if p]
  problems = []
  files = gin_files_of(command)
  for name in files:
    if "<" in name:  # a placeholder such as tasks/<task>.gin
      continue
    if not any(os.path.isfile(os.path.join(d, name)) for d in [*search, GIN_DIR]):
      problems.append(f"{command}: --gin_file={name} is not in musiclm_jax/gin/"
                      + (f" or {search}" if search else ""))
  for module in flag_values(command.args, "module_import"):
    if module.split(".")[0] == ENTRY_PREFIX and not _module_exists(module):
      problems.append(f"{command}: --module_import={module}: no such module")
  if command.module == "musiclm_jax.infer" and any(
      name == "runs/generate.gin" or name.startswith("pipeline/") for name in files):
    problems.append(f"{command}: text -> audio is `python -m musiclm_jax.generate`, "
                    "`infer` is token-level stage inference")
  return problems


def flag_names(args) -> set:
  names = set()
  for arg in args:
    if arg.startswith("--") and len(arg) > 2:
      name = arg[2:].split("=", 1)[0]
      names.add("gin_bindings" if name.startswith("gin.") else name)
  return names


def flag_problems(command: Command, help_text: str) -> list:
  return [f"{command}: --{name} is not a flag of {command.module} (not in its help)"
          for name in sorted(flag_names(command.args))
          if not re.search(rf"--(\[no\])?{re.escape(name)}\b", help_text)]


@dataclasses.dataclass
class Answer:
  module: str
  returncode: int
  stdout: str
  stderr: str
  problems: list


def _environment() -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


def ask_for_help(module: str, cwd: str) -> Answer:
  """Starts `python -m module` the way its kind of command line asks for help (or runs it,
  for RUN modules) and says what is wrong with the answer."""
  if module in RUN:
    args, output = RUN[module]
  else:
    args, code, stream, marker = HELP.get(module, ABSL_HELP)
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT, env=_environment())
  answer = Answer(module, result.returncode, result.stdout, result.stderr, [])
  tail = f"\nstdout: {result.stdout[-1500:]}\nstderr: {result.stderr[-1500:]}"
  if module in RUN:
    path = os.path.join(cwd, output)
    if result.returncode != 0 or not os.path.isfile(path) or not os.path.getsize(path):
      answer.problems.append(f"python -m {module} {shlex.join(args)} exited "
                             f"{result.returncode} without writing {output}{tail}")
  else:
    text = result.stdout if stream == "stdout" else result.stderr
    if result.returncode != code or not text.strip() or marker not in text:
      answer.problems.append(f"python -m {module} {shlex.join(args)}: exit {result.returncode} "
                             f"(expected {code}) and {stream} without {marker!r}{tail}")
  return answer


def ask_all(modules, cwd: str) -> dict:
  # Two at a time: each start imports JAX / TensorFlow (~5 s of one core).
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    return dict(zip(modules, pool.map(lambda m: ask_for_help(m, cwd), modules)))


def check_commands(commands, answers: dict) -> list:
  problems = []
  for command in commands:
    problems += gin_problems(command)
    answer = answers.get(command.module)
    if answer is None or answer.problems:
      continue  # not ours (seqio), or reported once, by module
    if command.module not in RUN:
      problems += flag_problems(command, answer.stdout + answer.stderr)
  for answer in answers.values():
    problems += answer.problems
  return problems


# ---------------------------------------------------------------------------------- names


def _expand(pattern: str) -> list:
  """Brace expansion (`models/{tiny,paper}.gin`), one level per group."""
  match = re.search(r"\{([^{}]*)\}", pattern)
  if not match:
    return [pattern]
  return [p for option in match.group(1).split(",")
          for p in _expand(pattern[:match.start()] + option + pattern[match.end():])]


def _exists(root: str, pattern: str) -> bool:
  return all(glob.glob(os.path.join(root, p)) for p in _expand(pattern))


def _module_exists(dotted: str) -> bool:
  path = REPO
  for part in dotted.split("."):
    if os.path.isdir(os.path.join(path, part)):
      path = os.path.join(path, part)
    elif os.path.isfile(os.path.join(path, part + ".py")):
      return True  # the rest are attributes
    else:
      return False
  return os.path.isfile(os.path.join(path, "__init__.py"))


def _anchors(text: str) -> set:
  return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
          for heading in re.findall(r"^#+ (.*)$", text, re.M)}


def name_problems(doc: str, text: str) -> list:
  problems = []
  for pattern, why in STALE:
    for match in re.finditer(pattern, text):
      line = text.count("\n", 0, match.start()) + 1
      problems.append(f"{doc}:{line}: {match.group(0)!r}: {why}")
  for regex, root, what in ((REPO_PATH, REPO, "path"), (GIN_NAME, GIN_DIR, "gin file")):
    for match in regex.finditer(text):
      name = match.group(1).rstrip(".")
      if "<" in name or name.endswith("..."):
        continue
      if not _exists(root, name):
        line = text.count("\n", 0, match.start()) + 1
        problems.append(f"{doc}:{line}: {what} {name} does not exist")
  for match in DOTTED.finditer(text):
    if not _module_exists(match.group(1)):
      line = text.count("\n", 0, match.start()) + 1
      problems.append(f"{doc}:{line}: module {match.group(1)} does not exist")
  for match in LINK.finditer(text):
    target = match.group(1)
    if re.match(r"\w+:", target):
      continue
    path, _, anchor = target.partition("#")
    full = os.path.normpath(os.path.join(REPO, os.path.dirname(doc), path)) if path else (
        os.path.join(REPO, doc))
    line = text.count("\n", 0, match.start()) + 1
    if not os.path.exists(full):
      problems.append(f"{doc}:{line}: link to {target}: no such file")
    elif (anchor and full.endswith(".md")
          and anchor not in _anchors(_read(os.path.relpath(full, REPO)))):
      problems.append(f"{doc}:{line}: link to {target}: no such heading")
  return problems


# ---------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def commands():
  found = doc_commands()
  modules = set(entry_modules(found))
  # The extraction works: every entry point is documented somewhere.
  expected = {f"{ENTRY_PREFIX}.{name}" for name in (
      "train", "infer", "generate", "evaluate", "plan", "fit_kmeans", "fit_mulan_rvq",
      "build_data", "demo", "demo.prompts", "demo.report")}
  assert expected <= modules, f"no docs command for {sorted(expected - modules)}"
  return found


def test_docs_commands_name_gin_files_flags_and_modules_that_exist(commands, tmp_path):
  readme = [c for c in commands if c.doc == "README.md"]
  assert readme, "README.md has no python -m musiclm_jax command"
  dry_run_dir = tmp_path / "demo"
  dry_run = subprocess.run(
      [sys.executable, "-m", "musiclm_jax.demo", "--dry_run", f"--output_dir={dry_run_dir}"],
      cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env=_environment())
  assert dry_run.returncode == 0 and dry_run.stdout.strip(), dry_run.stderr[-3000:]
  recipe = commands_in("(demo --dry_run)", f"```bash\n{dry_run.stdout}```\n")
  assert len(recipe) >= 10, dry_run.stdout
  undocumented = {c.module for c in recipe} - {c.module for c in commands}
  assert not undocumented, f"the demo runs modules the docs never show: {undocumented}"

  answers = ask_all(entry_modules(commands), str(tmp_path))
  problems = check_commands([*commands, *recipe], answers)
  assert not problems, "\n".join(problems)


def test_docs_name_only_files_modules_and_headings_that_exist():
  problems = [p for doc in DOCS for p in name_problems(doc, _read(doc))]
  assert not problems, "\n".join(problems)


def test_the_checks_catch_broken_commands_and_names(tmp_path):
  doc = """```bash
python -m musiclm_jax.demo --dry_run --no_such_flag=1
python -m musiclm_jax.train --gin_file=models/semantic/tiny.gin --gin_file=runs/no_such_run.gin
python -m musiclm_jax.infer --gin_file=pipeline/tiny.gin --gin_file=runs/generate.gin
python -m musiclm_jax.no_such_module --gin_file=runs/train.gin
MUSICLM_TOKENIZERS_GIN=tasks/no_such_tokens.gin python -m seqio.scripts.cache_tasks_main \\
  --module_import=musiclm_jax.data.no_such_tasks
```
See `musiclm_jax/tokens.py`, `musiclm_jax/gin/runs/nothing.gin`, `musiclm_jax.stages.nothing`
and [the guide](docs/nothing.md).
"""
  found = commands_in("fake.md", doc)
  assert entry_modules(found) == ["musiclm_jax.demo", "musiclm_jax.infer",
                                  "musiclm_jax.no_such_module", "musiclm_jax.train"]
  answers = ask_all(["musiclm_jax.demo", "musiclm_jax.no_such_module"], str(tmp_path))
  problems = "\n".join(check_commands(found, answers))
  assert "--no_such_flag is not a flag of musiclm_jax.demo" in problems
  assert "--gin_file=runs/no_such_run.gin is not in musiclm_jax/gin/" in problems
  assert "text -> audio is `python -m musiclm_jax.generate`" in problems
  assert "python -m musiclm_jax.no_such_module --helpfull: exit 1" in problems
  assert "--gin_file=tasks/no_such_tokens.gin is not in musiclm_jax/gin/" in problems
  assert "--module_import=musiclm_jax.data.no_such_tasks: no such module" in problems
  names = "\n".join(name_problems("README.md", doc))
  for expected in ("the token layout is", "gin/runs/nothing.gin does not exist",
                   "module musiclm_jax.stages.nothing does not exist",
                   "link to docs/nothing.md: no such file"):
    assert expected in names, names
