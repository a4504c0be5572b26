"""The figures of probing and of the report, drawn one way.

Runs are compared on shared axes; a value with an uncertainty (a mean over
seeds, an accuracy on a finite test set) carries its interval; titles are
words, not metric keys; and scores are drawn as points with intervals on an
axis fitted to them, never as bars from 0, which hide differences of a
point.
"""

import os
import textwrap
from typing import NamedTuple, Sequence

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
import numpy as np

# Titles in words for the built-in probing tasks.
PROBE_TITLES = {'tense': 'Tense of the main verb', 'subj_num': 'Number of the subject'}


class Line(NamedTuple):
  label: str
  x: np.ndarray
  y: np.ndarray
  color: int = 0                        # Matplotlib's C0, C1, ...
  style: str = '-'
  band: tuple[np.ndarray, np.ndarray] | None = None   # (low, high) around y.


class Panel(NamedTuple):
  title: str
  xlabel: str
  ylabel: str
  lines: Sequence[Line]
  shade: tuple[float, float] | None = None   # x range to shade, with its label.
  shade_label: str = ''
  integer_x: bool = False


class Points(NamedTuple):
  """One panel of scores: for each category (a metric), a point per run with
  its interval."""
  title: str
  ylabel: str
  categories: Sequence[str]
  runs: Sequence[str]
  values: dict                 # (category, run) -> (value, low, high).
  zero: float | None = None    # A dashed line at this value: no difference.


def save(fig, path: str) -> None:
  """Writes `fig` as a PNG and frees it."""
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _axes(count: int, sharey: bool):
  fig, axes = plt.subplots(1, count, figsize=(5 * count, 3.8), squeeze=False,
                           sharey=sharey)
  return fig, axes[0]


def lines(panels: Sequence[Panel], path: str, sharey: bool = True) -> None:
  """A row of line panels; `sharey` puts every panel on one y scale, so
  panels of one quantity compare at a glance."""
  fig, axes = _axes(len(panels), sharey)
  for ax, panel in zip(axes, panels):
    if panel.shade:
      ax.axvspan(*panel.shade, color='0.9', label=panel.shade_label)
    for line in panel.lines:
      if line.band is not None:
        ax.fill_between(line.x, *line.band, color=f'C{line.color}', alpha=0.2)
      ax.plot(line.x, line.y, line.style, color=f'C{line.color}', marker='.',
              label=line.label)
    ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
    if panel.integer_x:
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize='small')
  save(fig, path)


def points(panels: Sequence[Points], path: str) -> None:
  """A panel per task: each metric a group, each run a point with its
  interval bar, on an axis fitted to the intervals."""
  fig, axes = _axes(len(panels), sharey=False)
  for ax, panel in zip(axes, panels):
    width = 0.6 / max(len(panel.runs), 1)
    for i, run in enumerate(panel.runs):
      shown = [(j, panel.values[c, run]) for j, c in enumerate(panel.categories)
               if (c, run) in panel.values]
      if not shown:
        continue
      x = np.array([j for j, _ in shown]) + (i - (len(panel.runs) - 1) / 2) * width
      value, low, high = (np.array(v) for v in zip(*(s for _, s in shown)))
      ax.errorbar(x, value, yerr=[value - low, high - value], fmt='o', capsize=4,
                  color=f'C{i}', label=run)
    if panel.zero is not None:
      ax.axhline(panel.zero, color='0.5', linestyle='--', linewidth=1)
    # Wrapped: long metric names (seeds.py's measures) would run into each other.
    ax.set_xticks(range(len(panel.categories)),
                  [textwrap.fill(c, max(10, 60 // len(panel.categories)))
                   for c in panel.categories], fontsize='small')
    ax.set_xlim(-0.5, len(panel.categories) - 0.5)
    ax.set(title=panel.title, ylabel=panel.ylabel)
    ax.legend(fontsize='small')
  save(fig, path)


def binomial_interval(accuracy: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """95% normal-approximation interval of an accuracy on `n` test examples."""
  half = 1.96 * np.sqrt(accuracy * (1 - accuracy) / max(n, 1))
  return accuracy - half, accuracy + half


def run_names(paths: list[str]) -> list[str]:
  """The basenames of `paths`, with -2, -3, ... on repeats."""
  names = []
  for path in paths:
    base = os.path.basename(os.path.normpath(path))
    name, n = base, 1
    while name in names:
      n += 1
      name = f'{base}-{n}'
    names.append(name)
  return names


def probe_curves(results: dict[str, dict[str, dict[str, float]]], path: str,
         test_examples: dict[str, int], dropped: tuple[int, int] | None = None) -> None:
  """A panel per task with a curve per run: accuracy over layers (Figures 4,
  8) with its 95% interval on the test set, on one y scale, and the
  token-dropping layers `dropped` (first, last; from 1) shaded as the paper
  marks them."""
  tasks = list(dict.fromkeys(task for result in results.values() for task in result))
  panels = []
  for task in tasks:
    curves = []
    for i, (name, result) in enumerate(results.items()):
      if task in result:
        layers = sorted(result[task], key=int)
        accuracy = np.array([result[task][l] for l in layers])
        band = (binomial_interval(accuracy, test_examples[task])
                if task in test_examples else None)
        curves.append(Line(name, np.array([int(l) for l in layers]), accuracy,
                                 color=i, band=band))
    panels.append(Panel(
        PROBE_TITLES.get(task, task), 'layer', 'probe test accuracy', curves,
        shade=(dropped[0] - 0.5, dropped[1] + 0.5) if dropped else None,
        shade_label='dropped layers', integer_x=True))
  lines(panels, path)
