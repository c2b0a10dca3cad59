"""Flags of the experiment commands that draw figures (``experiments.ais``,
``experiments.saliency``, ``experiments.run``), defined once here so their meaning is the same
everywhere:

    --save_overlays --colormap --alpha     (define_overlay_flags)
    --categories                           (define_categories_flag)
    --saliency_weights                     (define_saliency_weights_flag)
"""

from __future__ import annotations

from absl import flags

from experiments import _common


def define_overlay_flags() -> None:
  """--save_overlays, --colormap, --alpha (registered for the calling module)."""
  _common.define_flag(
      flags.DEFINE_bool, "save_overlays", False, "Write overlays/<image>.png: each image beside "
      "its AIS heatmap over a grey copy of it, with a colorbar (each map scaled to its own "
      "range); experiments.saliency adds the AIS and saliency contours.",
      module_name=_caller())
  _common.define_flag(
      flags.DEFINE_string, "colormap", "inferno", "Matplotlib colormap of the overlays "
      "(perceptually uniform ones read best: inferno, magma, viridis).", module_name=_caller())
  _common.define_flag(
      flags.DEFINE_float, "alpha", 0.75, "Opacity of the overlay at the hottest pixel (0-1; "
      "cooler pixels are more transparent).", lower_bound=0.01, upper_bound=1.0,
      module_name=_caller())


def check_overlay_flags() -> None:
  """Refuses an unknown --colormap before any work (a UserInputError naming the flag)."""
  if not _common.FLAGS.save_overlays:
    return
  import matplotlib
  from ais_jax.errors import UserInputError
  if _common.FLAGS.colormap not in matplotlib.colormaps:
    raise UserInputError("--colormap", f"unknown colormap {_common.FLAGS.colormap!r}; use a "
                         "matplotlib name such as inferno, magma, viridis or turbo")


def define_categories_flag() -> None:
  """--categories (a CSV ``name,category``; ``ais_jax.io.categories``)."""
  _common.define_path(
      "categories", "", "CSV 'name,category' with the category of each "
      "image (by the names the image loader reports): figures and the report group, order and "
      "label images by it; the 92-image set brings its own.", module_name=_caller())


def define_saliency_weights_flag() -> None:
  """--saliency_weights (the TranSalNet checkpoint of --saliency=transalnet)."""
  _common.define_path(
      "saliency_weights", "", "With --saliency=transalnet: converted TranSalNet weights (a "
      "registered name or a checkpoint directory; default transalnet_res, converted once with "
      "python -m convert.fetch --name=transalnet_res --src=TranSalNet_Res.pth).",
      module_name=_caller())


def _caller() -> str:
  import sys
  name = sys._getframe(2).f_globals["__name__"]  # pylint: disable=protected-access
  return sys.argv[0] if name == "__main__" else name
