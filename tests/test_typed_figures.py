"""Prose never repeats a figure the notebook computes.

A number typed into markdown goes stale the next time the notebook runs on
another machine (or after a library change). So markdown may not state
percentages, speeds, durations, sizes in bytes or speed ratios; the text
refers to the printed line instead ("the printed accuracy"), or code prints
the sentence. Targets, definitions and figures from the literature are
allowed explicitly below, each with the reason.
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))

NUMBER = r"\d[\d,]*(?:\.\d+)?"
FIGURE = re.compile(
    rf"(?<![\w.$^{{_\\/-])(?:≈\s?)?{NUMBER}(?:\s?[–-]\s?{NUMBER})?\s?"
    r"(?:%|per ?cent\b|images/s\b|images per second\b|ms\b|s\b|seconds?\b|minutes?\b|min\b"
    r"|[KMG]i?B\b|GFLOP/s\b|×(?!\s?\d))")

# (notebook number, figure as written): why it may be typed
ALLOWED = {
    ("00", "90 %"): "notebook 08's target, in the contents",
    ("02", "50 %"): "chance level of a two-class problem, a definition",
    ("03", "97 %"): "the reference tutorial's reported result (literature)",
    ("04", "50 %"): "an order of magnitude for rounding error in float32, argued in the text",
    ("04", "100 %"): "the symptom being described (a memorised training set)",
    ("06", "1.5×"): "a rule of thumb for timing noise, not a measurement",
    ("07", "10 %"): "chance level of ten classes, a definition",
    ("08", "100 %"): "the symptom being described (a memorised training set)",
    ("08", "90 %"): "the target of the default run",
    ("08", "80 %"): "a threshold set by the exercise",
    ("08", "0.95 %"): "LeNet-5's published MNIST error (literature)",
    ("08", "15.3 %"): "AlexNet's published top-5 error (literature)",
    ("08", "7.3 %"): "VGG-16's published top-5 error (literature)",
    ("08", "3.57 %"): "ResNet's published top-5 error (literature)",
    ("08", "25 %"): "the training error the AlexNet paper reports for CIFAR-10 (literature)",
    ("10", "4 KiB"): "the page size of x86-64 Linux, a platform constant",
    ("10", "5 %"): "bench_auto_step's tolerance for a right pick, a definition",
    ("10", "32 MiB"): "glibc's documented ceiling for its mmap threshold, a constant of the allocator",
    ("10", "2 MiB"): "the huge-page size of x86-64 Linux, a platform constant",
}


def typed_figures(nb):
    """(cell index, figure, context) for every figure stated in markdown prose;
    maths ($...$), code spans and the generated navigation cells are skipped."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown" or "cnnlib_nav" in cell.get("metadata", {}):
            continue
        text = "".join(cell["source"])
        text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$", " ", text, flags=re.S)
        text = re.sub(r"`[^`\n]*`", " ", text)
        for m in FIGURE.finditer(text):
            context = text[max(0, m.start() - 60):m.end() + 20].replace("\n", " ")
            found.append((i, m.group(0).strip(), context))
    return found


def test_the_scanner_finds_what_it_should():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [
        "It reached 98.3 % in 12.3 s, 6,830 images/s, 1.5× the classic version; a 3×3 kernel,\n",
        "$\\approx 97\\%$ in maths and `0.5 s` in code are not prose. 4 GB of memory, 58 MB."]}]}
    assert [f for _, f, _ in typed_figures(nb)] == ["98.3 %", "12.3 s", "6,830 images/s", "1.5×", "4 GB", "58 MB"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_typed_figures_in_prose(path):
    nb = json.loads(path.read_text())
    number = path.name[:2]
    problems = [f"cell {i}: {figure!r} in '…{context}…'" for i, figure, context in typed_figures(nb)
                if (number, figure) not in ALLOWED]
    assert not problems, (f"{path.name}: figures typed in prose; refer to the printed line or print "
                          "the sentence (or, for a target or a literature figure, add it to ALLOWED "
                          "with the reason):\n  " + "\n  ".join(problems))
