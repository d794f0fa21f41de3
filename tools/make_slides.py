#!/usr/bin/env python3
"""Give every cell of the numbered notebooks its slide type, for live slides (RISE).

Usage::

    python tools/make_slides.py            # update notebooks/NN_*.ipynb in place
    python tools/make_slides.py --check    # change nothing; exit 1 listing notebooks out of date

JupyterLab with ``jupyterlab-rise`` (in requirements.txt) presents a notebook
as a slideshow, running its code live: open
``http://localhost:8888/rise/notebooks/NN_name.ipynb``, or press the RISE
button in the notebook's toolbar. It reads each cell's
``metadata.slideshow.slide_type``; this tool derives that from the
notebook's structure, so nobody sets it by hand:

* the navigation cells (metadata ``cnnlib_nav``): ``skip``, since the
  slideshow has its own arrows;
* the first cell (the ``# Title``), every cell opening with a ``#`` or
  ``##`` heading: ``slide`` (the sections run left to right);
* every cell opening with a ``###`` heading, every exercise (tag
  ``exercise``) and every markdown cell right after a solution (the next
  exercise, where exercises are not tagged): ``subslide`` (downwards,
  inside its section);
* a long section is split into sub-slides: before a cell that would bring
  the current (sub-)slide past about one screen (``SCREEN_LINES`` lines,
  estimated from the text, the code, the printed output and the pixel
  height of stored figures). When that cell is code, the break goes before
  the prose that introduces it instead, so code stays with its explanation
  and output stays with its code (a slide that holds only that prose keeps
  the code, however tall: RISE scrolls);
* cells tagged ``solution``: ``skip``. The slides are for presenting in
  front of a class, where an answer should not come up by pressing the
  space bar once too often; ``fragment`` would also make every later
  slide wait for it. The solutions stay in the notebook, collapsed, and run
  as usual (RISE skips showing them, not running them);
* everything else: ``-`` (continues the current slide).

Only ``metadata.slideshow.slide_type`` is written; other metadata, the
sources and the outputs stay as they are. Files are written the way
tools/make_nav.py writes them (as JupyterLab saves), and only when their
text changes, so a second run changes nothing.
"""
import argparse
import base64
import copy
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_nav  # noqa: E402  (a sibling script, not a package)

SLIDE, SUBSLIDE, CONTINUE, SKIP = "slide", "subslide", "-", "skip"
SCREEN_LINES = 30       # what fits one slide, in lines of ~100 characters
LINE_CHARS = 100
PIXELS_PER_LINE = 22    # a stored figure's height in lines: its pixels / this
OUTPUT_LINES_SHOWN = 20  # a long printed output scrolls; it counts this much at most
HEADING = re.compile(r"^(#{1,6})\s")


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def heading_level(cell):
    """Level of the heading a markdown cell opens with (1 for ``# ``), or None."""
    if cell.cell_type != "markdown":
        return None
    first = next((line for line in cell.source.splitlines() if line.strip()), "")
    m = HEADING.match(first)
    return len(m.group(1)) if m else None


def _text_lines(text):
    return sum(max(1, math.ceil(len(line) / LINE_CHARS)) for line in text.splitlines())


def _png_height(data):
    """Pixel height of a base64 PNG (read from its header), or None."""
    try:
        head = base64.b64decode("".join(data.split())[:44])
    except ValueError:
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 24:
        return None
    return int.from_bytes(head[20:24], "big")


def _output_lines(output):
    if output.get("output_type") == "stream":
        return min(OUTPUT_LINES_SHOWN, _text_lines(output.get("text", "")))
    data = output.get("data", {})
    if "image/png" in data:
        stored = output.get("metadata", {}).get("image/png", {}).get("height")
        pixels = stored or _png_height(data["image/png"]) or 300
        return math.ceil(pixels / PIXELS_PER_LINE)
    if "text/plain" in data:
        return min(OUTPUT_LINES_SHOWN, _text_lines(data["text/plain"]))
    return 1


def cell_lines(cell):
    """Rough height of a cell on a slide, in lines."""
    lines = _text_lines(cell.source)
    if cell.cell_type == "markdown":
        return lines + cell.source.count("$$") + 1          # display maths and margins are taller
    return lines + sum(_output_lines(o) for o in cell.get("outputs", [])) + 1


def _introduces(nb, group, cell):
    """True if the (sub-)slide so far is only the markdown cell that introduces code ``cell``."""
    return cell.cell_type == "code" and len(group) == 1 and nb.cells[group[0]].cell_type == "markdown"


def slide_types(nb):
    """The slide type of every cell of ``nb``, in order (see the module docstring)."""
    types, group, height, first, after_solution = [], [], 0, True, False
    for i, cell in enumerate(nb.cells):
        if make_nav.is_nav(cell):
            types.append(SKIP)
            continue
        if "solution" in _tags(cell):
            types.append(SKIP)
            after_solution = True
            continue
        level, lines = heading_level(cell), cell_lines(cell)
        if first or (level is not None and level <= 2):
            kind = SLIDE
        elif level == 3 or "exercise" in _tags(cell) or (after_solution and cell.cell_type == "markdown"):
            kind = SUBSLIDE
        elif group and height + lines > SCREEN_LINES and not _introduces(nb, group, cell):
            previous = group[-1]
            if (cell.cell_type == "code" and len(group) > 1 and types[previous] == CONTINUE
                    and nb.cells[previous].cell_type == "markdown"):
                # Break before the prose that introduces this code, not between them.
                types[previous] = SUBSLIDE
                group, height = [previous], cell_lines(nb.cells[previous])
                kind = CONTINUE
            else:
                kind = SUBSLIDE
        else:
            kind = CONTINUE
        if kind == CONTINUE:
            group.append(i)
            height += lines
        else:
            group, height = [i], lines
        types.append(kind)
        first = after_solution = False
    return types


def with_slides(nb):
    """A copy of ``nb`` whose cells carry the slide types of ``slide_types``."""
    nb = copy.deepcopy(nb)
    for cell, kind in zip(nb.cells, slide_types(nb)):
        cell.metadata.setdefault("slideshow", {})["slide_type"] = kind
    return nb


def plan(root=make_nav.ROOT):
    """{path: text it should have} for every numbered notebook under ``root``. Writes nothing."""
    nbdir = Path(root) / make_nav.NOTEBOOK_DIR
    return {path: make_nav.notebook_text(with_slides(make_nav.read_notebook(path)))
            for path in make_nav.series_notebooks(nbdir)}


def update(root=make_nav.ROOT, check=False, out=None):
    """Write the slide types (or, with ``check``, only list what would change). Returns the changed paths."""
    out = out or sys.stdout
    root = Path(root)
    changed = []
    for path, text in plan(root).items():
        if make_nav.current_text(path) != text:
            changed.append(path)
            if not check:
                make_nav.write_text(path, text)
    verb = "out of date" if check else "updated"
    for path in changed:
        print(f"{verb}: {path.relative_to(root)}", file=out)
    if not changed:
        print("slide types up to date", file=out)
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=make_nav.ROOT,
                        help="repository root (default: the one this script is in)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if any notebook's slide types are out of date")
    args = parser.parse_args(argv)
    changed = update(args.root, check=args.check)
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
