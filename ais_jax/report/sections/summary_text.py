"""The report's opening section: what this run shows, in sentences built from its own numbers.

The planted cohort has its own interpretation in its section (``planted.note``); this paragraph
reads any run (the 92 images, your own images): how well the model's similarities agree with
the human ones, whether the maps AIS ranks first carry that agreement to held-out images, whether
models agree on where it comes from, and whether saliency predicts it. Every number it quotes is
in a table or figure further down.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ais_jax.report import index
from ais_jax.report.sections import fmt


def _p(tests: dict, name: str) -> Optional[float]:
  return (tests.get(name) or {}).get("pvalue")


def paragraphs(*, cohort, models, similarity: dict, selection: Optional[dict],
               match: Optional[dict], categories: Optional[dict], saliency: Optional[dict],
               config) -> list[str]:
  """Sentences on what the run shows and what it does not, from its results."""
  main = models[0].label
  n = len(cohort.names)
  ag = similarity["agreement"][main]
  out = [f"{main}'s similarities over the {n} images agree with the human ones at "
         f"{config.comparison} r = {ag:.3f} (over all {n * (n - 1) // 2} pairs; see the matrices "
         "side by side below)."]
  if selection is not None:
    tests = selection["tests"]
    p = _p(tests, "retained_vs_full_corrected")
    gain = selection["mean_test_retained"] - selection["mean_test_full"]
    score = selection["settings"]["score"]
    verdict = ("a gain that the corrected test supports (p < 0.05)" if p is not None and p < 0.05
               else "a difference the corrected test does not support at p < 0.05")
    out.append(
        f"On held-out images, keeping only the maps AIS ranks first (m* = "
        f"{fmt(selection['mean_m_star'], 0)} of {models[0].run.cohort_ais.size} on average) "
        f"gives a test {score} of {fmt(selection['mean_test_retained'])} against "
        f"{fmt(selection['mean_test_full'])} with all maps ({'+' if gain >= 0 else ''}"
        f"{gain:.3f}; corrected t-test p = {fmt(p)}), {verdict}; a random order of the same "
        f"number of maps gives {fmt(selection['mean_test_random_order'])}. So the AIS ranking "
        + ("picks out maps that carry the agreement beyond the images it was computed on."
           if p is not None and p < 0.05 and gain > 0 else
           "is not shown here to carry the agreement to new images."))
  if match is not None:
    parts = [f"{pair}: median {fmt(e['median'], 2)}" for pair, e in match["pairs"].items()]
    out.append("Models agree on where the comparison-relevant features are to the extent their "
               "heatmaps correlate per image (Match score; " + "; ".join(parts) + "): near 1 = "
               "the same places, near 0 = unrelated.")
  if categories is not None:
    r = np.asarray(categories["r"], np.float64)
    off = r[~np.eye(r.shape[0], dtype=bool)]
    off = off[np.isfinite(off)]
    if off.size:
      out.append(f"Cohort AIS computed within each category correlates between categories from "
                 f"r = {off.min():.2f} to {off.max():.2f} (median {np.median(off):.2f}): the "
                 "lower, the more the maps that matter depend on the category.")
  if saliency is not None and saliency.get("all_images"):
    rows = {float(r["top"]): r for r in saliency["all_images"]}
    mid = sorted(rows)[len(rows) // 2]
    r = rows[mid]
    out.append(f"Saliency ({saliency['saliency']}) and the AIS heatmap: at the top {mid:g}% "
               f"pixels the mean relative risk is {fmt(r['mean'], 2)} (1 = saliency says nothing "
               "about where the AIS heatmap is high; above 1 = they overlap).")
  out.append("What it does not show: AIS says which feature maps of this layer carry the "
             "agreement with these human judgments, and heatmaps show where those maps are "
             "active; neither says that people use the same image regions, and with "
             f"{n} images per-image values are noisy (compare the held-out numbers, not the "
             "in-sample ones).")
  return out


def section(*, cohort, models, similarity, selection, planted, match, categories, saliency,
            config) -> index.Section:
  """The "What this run shows" section (for the planted cohort, a pointer to its own note)."""
  if planted is not None:
    text = ["The planted cohort has a known answer: the section 'Planted truth' below says how "
            "close each map comes to it, and what that does and does not show."]
    text += paragraphs(cohort=cohort, models=models, similarity=similarity, selection=None,
                       match=match, categories=categories, saliency=None, config=config)[:1]
  else:
    text = paragraphs(cohort=cohort, models=models, similarity=similarity, selection=selection,
                      match=match, categories=categories, saliency=saliency, config=config)
  return index.Section("What this run shows", [index.Text(text)])
