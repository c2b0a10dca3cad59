"""Image categories from a CSV file ``name,category`` (``--categories=FILE``).

The file has a header row naming the columns ``name`` and ``category`` (any order, other columns
ignored, names matched case-insensitively) and one row per image:

    name,category
    img000.png,face
    img001.png,body
    ...

``name`` is the image's name as the loader reports it (the file name in a folder of images, the
line of ``--image_list``, or ``images.npy[0]``, ``images.npy[1]``, ... for a ``.npy`` array).
Rows for images that are not in the cohort are allowed (one file can serve several image lists);
every image of the cohort needs exactly one row with a non-empty category. Leading and trailing
spaces are stripped.

    categories = load_categories("cats.csv", image_names)   # ['face', 'body', ...], one per image
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

from ais_jax.errors import UserInputError

NAME_COLUMN = "name"
CATEGORY_COLUMN = "category"
_SHOWN = 5  # Names quoted in an error message before "... and N more".


def _quote(names: Sequence[str]) -> str:
  shown = ", ".join(repr(n) for n in names[:_SHOWN])
  more = len(names) - _SHOWN
  return shown + (f" ... and {more} more" if more > 0 else "")


def read_categories_csv(path: str) -> dict[str, str]:
  """``{image name: category}`` from a ``name,category`` CSV file.

  Raises:
    UserInputError naming the file (and the line) when it is missing, unreadable, has no
    ``name``/``category`` header, an empty name or category, or a name listed twice.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserInputError(path, "categories file not found; give a CSV file with a header "
                         "'name,category' and one row per image")
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise UserInputError(path, f"cannot read the categories CSV ({e}); save it as UTF-8 text "
                         "with a header 'name,category'") from None
  rows = [(line, row) for line, row in enumerate(rows, start=1)
          if any(cell.strip() for cell in row)]
  if not rows:
    raise UserInputError(path, "categories file is empty; expected a header 'name,category' "
                         "and one row per image")
  header_line, header = rows[0]
  columns = [cell.strip().lower() for cell in header]
  missing_columns = [c for c in (NAME_COLUMN, CATEGORY_COLUMN) if c not in columns]
  if missing_columns:
    raise UserInputError(f"{path} line {header_line}", f"header {header!r} lacks the column(s) "
                         f"{', '.join(missing_columns)}; the first row must name the columns "
                         "'name,category'")
  name_col, cat_col = columns.index(NAME_COLUMN), columns.index(CATEGORY_COLUMN)
  out: dict[str, str] = {}
  first_line: dict[str, int] = {}
  for line, row in rows[1:]:
    if len(row) <= max(name_col, cat_col):
      raise UserInputError(f"{path} line {line}", f"row {row!r} has {len(row)} column(s); "
                           f"expected at least {len(columns)} as in the header")
    name, category = row[name_col].strip(), row[cat_col].strip()
    if not name:
      raise UserInputError(f"{path} line {line}", "empty image name")
    if not category:
      raise UserInputError(f"{path} line {line}", f"image {name!r} has an empty category")
    if name in out:
      raise UserInputError(f"{path} line {line}", f"image {name!r} is listed again (first on "
                           f"line {first_line[name]}); give each image one row")
    out[name] = category
    first_line[name] = line
  if not out:
    raise UserInputError(path, "categories file has a header but no rows; add one row "
                         "'name,category' per image")
  return out


def load_categories(path: str, image_names: Sequence[str]) -> list[str]:
  """The category of each image, in the order of ``image_names``.

  Args:
    path: CSV file with a header ``name,category`` (see the module docstring).
    image_names: the cohort's image names (n strings, as the image loader returns them).

  Returns:
    n category strings.

  Raises:
    UserInputError naming the file when it is malformed (:func:`read_categories_csv`) or lacks a
    row for some image (the message lists the missing names and the file's unmatched names).
  """
  table = read_categories_csv(path)
  names = [str(n) for n in image_names]
  missing = [n for n in names if n not in table]
  if missing:
    unmatched = sorted(set(table) - set(names))
    hint = (f"; names in the file that match no image: {_quote(unmatched)}" if unmatched else "")
    raise UserInputError(path, f"no category for {len(missing)} of {len(names)} images: "
                         f"{_quote(missing)}{hint}. The 'name' column must hold the image names "
                         "as loaded (file names of --images, lines of --image_list, or "
                         "FILE.npy[0], FILE.npy[1], ... for a .npy array)")
  return [table[n] for n in names]


def cohorts_by_category(categories: Sequence[str]) -> dict[str, list[int]]:
  """``{category: sorted image indices}``, categories in order of first appearance."""
  out: dict[str, list[int]] = {}
  for index, category in enumerate(categories):
    out.setdefault(str(category), []).append(index)
  return out
