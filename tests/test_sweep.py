"""Architecture sweep (experiments.architectures): categories files, cohorts, cells, resume."""

import os

import pytest

from ais_jax.errors import UserInputError
from ais_jax.io import categories as categories_io


def _write(tmp_path, text, name="cats.csv"):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_categories_in_image_order_extra_rows_and_columns_allowed(tmp_path):
  path = _write(tmp_path, "category,name,note\n face , b.png ,x\nbody,a.png,\n"
                "\nplace,unused.png,\nface,c.png,y\n")
  assert categories_io.load_categories(path, ["a.png", "b.png", "c.png"]) == [
      "body", "face", "face"]
  assert categories_io.cohorts_by_category(["body", "face", "body", "tool"]) == {
      "body": [0, 2], "face": [1], "tool": [3]}


def test_categories_utf8_bom_header_is_read(tmp_path):
  path = _write(tmp_path, "\ufeffName,Category\n0,x\n1,y\n")
  assert categories_io.load_categories(path, ["0", "1"]) == ["x", "y"]


@pytest.mark.parametrize("text, fragment", [
    ("file,label\na.png,x\n", "lacks the column(s) name, category"),
    ("name,category\na.png,\n", "line 2: image 'a.png' has an empty category"),
    ("name,category\n,x\n", "line 2: empty image name"),
    ("name,category\na.png,x\na.png,y\n", "line 3: image 'a.png' is listed again (first on "
     "line 2)"),
    ("name,category\na.png\n", "line 2: row ['a.png'] has 1 column(s)"),
    ("", "categories file is empty"),
    ("name,category\n", "header but no rows"),
])
def test_categories_malformed_files_say_what_and_where(tmp_path, text, fragment):
  path = _write(tmp_path, text)
  with pytest.raises(UserInputError) as e:
    categories_io.load_categories(path, ["a.png"])
  assert fragment in str(e.value)
  assert str(e.value).startswith(path)


def test_categories_missing_images_listed_with_unmatched_names(tmp_path):
  path = _write(tmp_path, "name,category\na.jpg,x\nb.png,y\n")
  with pytest.raises(UserInputError) as e:
    categories_io.load_categories(path, ["a.png", "b.png"])
  message = str(e.value)
  assert "no category for 1 of 2 images: 'a.png'" in message
  assert "match no image: 'a.jpg'" in message


def test_categories_missing_file(tmp_path):
  with pytest.raises(UserInputError, match="categories file not found"):
    categories_io.load_categories(str(tmp_path / "nope.csv"), ["a"])
