"""music21's corpus as a list of works with what a caption needs: composer or collection, form.

A work is one score: a file, or one tune of an abc file that holds many (`X:` numbers), with
the id `<corpus folder>/<file stem>[#<X number>]`. A file encoded twice (`bwv277.krn` and
`.mxl`) is one work. The corpus's own metadata is unreliable (Monteverdi's madrigals carry
their title in the composer field, Bach's chorales have neither), so who wrote a work and
what it is come from the collection it sits in (`COLLECTIONS`) and, for dance tunes and mass
movements, from its title; a work of a folder not in the table falls back on the score's
metadata and says only as much as that holds.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from typing import Optional

# Preferred encoding when a work is in the corpus twice; .rntxt files are harmonic analyses,
# not scores, and are never listed.
EXTENSIONS = (".mxl", ".musicxml", ".xml", ".krn", ".abc")


@dataclasses.dataclass(frozen=True)
class Collection:
  source: str                     # "by J. S. Bach" / "from Ryan's Mammoth Collection"
  form: str                       # the form when the title names none
  forms_from_title: bool = False  # dance tunes, mass movements: the title names the form
  # Folk tunes recur across the collections under one title: their split goes by the title,
  # so one tune never sits in two splits.
  split_by_title: bool = False


COLLECTIONS = {
    "bach": Collection("by J. S. Bach", "chorale"),
    "palestrina": Collection("by Palestrina", "motet", forms_from_title=True),
    "monteverdi": Collection("by Monteverdi", "madrigal"),
    "josquin": Collection("by Josquin des Prez", "chanson"),
    "trecento": Collection("from the Italian Trecento", "song"),
    "mozart": Collection("by Mozart", "string quartet movement"),
    "haydn": Collection("by Haydn", "string quartet movement"),
    "beethoven": Collection("by Beethoven", "string quartet movement"),
    "essenFolksong": Collection("from the Essen folk song collection", "folk song",
                                split_by_title=True),
    "ryansMammoth": Collection("from Ryan's Mammoth Collection", "fiddle tune",
                               forms_from_title=True, split_by_title=True),
    "oneills1850": Collection("from O'Neill's Music of Ireland", "Irish tune",
                              forms_from_title=True, split_by_title=True),
    "airdsAirs": Collection("from Aird's Airs", "air", forms_from_title=True,
                            split_by_title=True),
}

# Title word -> form, first match wins (slip jig before jig).
_TITLE_FORMS = (
    ("slip ?jig", "slip jig"), ("jig", "jig"), ("reel", "reel"), ("hornpipe", "hornpipe"),
    ("strathspey", "strathspey"), ("clog", "clog dance"), ("fling", "highland fling"),
    ("waltz", "waltz"), ("polka", "polka"), ("march", "march"), ("quickstep", "march"),
    ("schottische", "schottische"), ("minuet", "minuet"), ("set dance", "set dance"),
    ("kyrie|gloria|credo|sanctus|benedictus|agnus", "mass movement"),
)
FORMS = tuple(sorted({form for _, form in _TITLE_FORMS} | {c.form for c in COLLECTIONS.values()}
                     | {"piece"}))


@functools.lru_cache(maxsize=1)
def corpus_root() -> str:
  import music21  # pylint: disable=import-outside-toplevel
  return os.path.join(os.path.dirname(music21.__file__), "corpus")


@dataclasses.dataclass(frozen=True)
class Work:
  work_id: str           # "<folder>/<stem>" or "<folder>/<stem>#<X number>"
  collection: str        # the corpus folder
  path: str              # relative to corpus_root()
  number: Optional[int]  # the abc tune's X: number, None for a one-score file
  title: str             # from the abc header when listed, else filled in on parsing

  @property
  def split_key(self) -> str:
    spec = COLLECTIONS.get(self.collection)
    if spec is not None and spec.split_by_title and self.title:
      return "title:" + normalized_title(self.title)
    return "work:" + self.work_id


def normalized_title(title: str) -> str:
  words = re.sub(r"[^a-z0-9 ]+", " ", title.lower()).split()
  return " ".join(w for w in words if w not in ("the", "a"))


def stable_fraction(*keys) -> float:
  """A number in [0, 1) fixed by `keys` alone (the same on every machine and run)."""
  digest = hashlib.sha256("\x1f".join(str(k) for k in keys).encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def _abc_tunes(text: str) -> list[tuple[int, str]]:
  """(X number, first T: title) of every tune in an abc file."""
  tunes = []
  for chunk in re.split(r"(?m)^(?=X:)", text):
    number = re.match(r"X:\s*(\d+)", chunk)
    if number:
      title = re.search(r"(?m)^T:\s*(.*\S)", chunk)
      tunes.append((int(number.group(1)), title.group(1) if title else ""))
  return tunes


def list_works(collection: str, root: Optional[str] = None) -> list[Work]:
  """Every work of a corpus folder, sorted by id; the folder must exist."""
  root = root or corpus_root()
  folder = os.path.join(root, collection)
  if not os.path.isdir(folder):
    raise ValueError(f"no corpus folder {collection!r} in {root}")
  by_stem = {}
  for directory, _, files in os.walk(folder):
    for name in files:
      stem, extension = os.path.splitext(name)
      if extension not in EXTENSIONS:
        continue
      relative = os.path.relpath(os.path.join(directory, name), root)
      key = os.path.splitext(relative)[0].replace(os.sep, "/")
      old = by_stem.get(key)
      if old is None or EXTENSIONS.index(extension) < EXTENSIONS.index(os.path.splitext(old)[1]):
        by_stem[key] = relative
  works = []
  for key, relative in sorted(by_stem.items()):
    if relative.endswith(".abc"):
      with open(os.path.join(root, relative), encoding="utf-8", errors="replace") as f:
        tunes = _abc_tunes(f.read())
      if len(tunes) > 1:
        seen = set()
        for number, title in tunes:
          if number not in seen:  # a repeated X: number is one tune for music21's parser
            seen.add(number)
            works.append(Work(f"{key}#{number}", collection, relative, number, title))
        continue
      title = tunes[0][1] if tunes else ""
      works.append(Work(key, collection, relative, None, title))
    else:
      works.append(Work(key, collection, relative, None, ""))
  return works


def parse(work: Work, root: Optional[str] = None):
  """The music21 Score of a work (the tune `number` of an abc file of many)."""
  import warnings  # pylint: disable=import-outside-toplevel
  from music21 import converter, stream  # pylint: disable=import-outside-toplevel
  path = os.path.join(root or corpus_root(), work.path)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # music21 warns on every quirk it repairs
    if work.number is not None:
      parsed = converter.parse(path, number=work.number)
    else:
      parsed = converter.parse(path)
  if isinstance(parsed, stream.Opus):
    if not parsed.scores:
      raise ValueError(f"{work.path}: an opus with no scores")
    parsed = parsed.scores[0]
  return parsed


def _clean(text) -> str:
  """Whitespace collapsed; a file name (what music21 puts in movementName when the score
  names nothing) loses its extension."""
  text = re.sub(r"\s+", " ", str(text or "")).strip()
  for extension in EXTENSIONS:
    if text.lower().endswith(extension):
      text = text[:-len(extension)]
  return text.rstrip(".")


def describe(work: Work, score) -> dict[str, str]:
  """{"composer", "title", "form", "source"}: `source` is the caption's "by ..."/"from ...".

  Titles and composers from the score's metadata only where the collection does not
  already know better; every field may come out empty but `form` and `source`.
  """
  metadata = getattr(score, "metadata", None)
  title = work.title
  composer = ""
  if metadata is not None:
    title = title or _clean(metadata.title) or _clean(metadata.movementName)
    composer = _clean(metadata.composer)
  title = _clean(title) or work.work_id.rsplit("/", 1)[-1]
  spec = COLLECTIONS.get(work.collection)
  if spec is None:
    source = f"by {composer}" if composer else "from the music21 corpus"
    return {"composer": composer, "title": title, "form": "piece", "source": source}
  form = spec.form
  if spec.forms_from_title:
    # The file name too: Palestrina's say `Benedictus_23_a` where the title names the mass.
    stem = work.work_id.rsplit("/", 1)[-1].split("#")[0].replace("_", " ")
    form = title_form(title) or title_form(stem) or form
  if spec.source.startswith("by "):
    composer = spec.source[3:]  # the folder is the composer; the metadata field may not be
  return {"composer": composer, "title": title, "form": form, "source": spec.source}


def title_form(title: str) -> str:
  """The form a title names ('The Rights of Man -- Hornpipe' -> 'hornpipe'), '' if none."""
  lowered = title.lower()
  for pattern, form in _TITLE_FORMS:
    if re.search(r"\b(" + pattern + r")s?\b", lowered):
      return form
  return ""
