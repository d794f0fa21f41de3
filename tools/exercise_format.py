#!/usr/bin/env python3
"""Check that a notebook's exercises follow the series' format.

The format uses standard cell tags (JupyterLab's property inspector edits
them; nbconvert's TagRemovePreprocessor and tools/student_edition.py read them):

1. a markdown cell tagged ``exercise``: the task and its level, one of
   warm-up, core or stretch;
2. right after it, a code cell tagged ``your-turn`` that runs as given (a
   stub, ``...``, or a function to complete), often ending with a self-check
   from ``cnnlib.checks``;
3. right after that, one or more cells tagged ``solution``, at least one of
   them code, collapsed in the stored notebook: ``metadata.jupyter.source_hidden``
   (and, for code, ``outputs_hidden``) true. CI executes them like any cell.
   A markdown solution cell (a discussion of the answer) is allowed too: the
   student edition removes it with the code.

Each notebook has at least 3 exercises, and at least one your-turn cell
calls a function of ``cnnlib.checks`` (``checks.im2col(my_im2col)``) or asserts.

Usage::

    python tools/exercise_format.py                 # every numbered notebook
    python tools/exercise_format.py notebooks/06_im2col.ipynb

``problems(nb)`` returns the list of problems of one notebook (empty = fine);
tests/test_exercise_format.py runs it on every notebook.
"""
import re
import sys
from pathlib import Path

import nbformat

EXERCISE, YOUR_TURN, SOLUTION = "exercise", "your-turn", "solution"
TAGS = (EXERCISE, YOUR_TURN, SOLUTION)
LEVEL = re.compile(r"\b(warm[- ]?up|core|stretch)\b", re.IGNORECASE)
SELF_CHECK = re.compile(r"\bchecks\.\w+\s*\(|from\s+cnnlib\.checks\s+import|^\s*assert\b", re.MULTILINE)
MIN_EXERCISES = 3


def _where(i, cell):
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return f"cell {i} ({first[:40] + ('...' if len(first) > 40 else '')!r})"


def _role(cell):
    """The cell's exercise tag: exercise, your-turn, solution or None."""
    tags = cell.get("metadata", {}).get("tags", [])
    return next((t for t in TAGS if t in tags), None)


def _hidden(cell, key):
    return cell.get("metadata", {}).get("jupyter", {}).get(key) is True


def problems(nb):
    """Everything wrong with the exercise format of ``nb``, as readable strings."""
    found, exercises, checked = [], 0, False
    expect, group, opener = None, [], None     # what must come next; the current solution group

    def close_group():
        if group and not any(c.cell_type == "code" for _, c in group):
            found.append(f"{_where(*group[0])}: the solution has no code cell")

    for i, cell in enumerate(nb.cells):
        role, where = _role(cell), _where(i, cell)
        extra = [t for t in TAGS if t in cell.get("metadata", {}).get("tags", []) and t != role]
        if extra:
            found.append(f"{where}: tagged both {role} and {', '.join(extra)}; one role per cell")
        if expect == YOUR_TURN and role != YOUR_TURN:
            found.append(f"{opener}: the exercise is not followed by a code cell tagged your-turn")
        if expect == SOLUTION and role != SOLUTION:
            found.append(f"{opener}: the your-turn cell is not followed by a cell tagged solution")
        if role != SOLUTION:
            close_group()
            group = []

        if role == EXERCISE:
            exercises += 1
            if cell.cell_type != "markdown":
                found.append(f"{where}: tagged exercise but is a {cell.cell_type} cell; the task goes in markdown")
            if not LEVEL.search(cell.source):
                found.append(f"{where}: the exercise states no level (warm-up, core or stretch)")
            expect, opener = YOUR_TURN, where
        elif role == YOUR_TURN:
            if expect != YOUR_TURN:
                found.append(f"{where}: a your-turn cell without an exercise cell right before it")
            if cell.cell_type != "code":
                found.append(f"{where}: tagged your-turn but is a {cell.cell_type} cell")
            elif not cell.source.strip():
                found.append(f"{where}: empty your-turn cell; give a stub that runs (`...`, or a function to complete)")
            checked = checked or bool(SELF_CHECK.search(cell.source))
            expect, opener = SOLUTION, where
        elif role == SOLUTION:
            if expect != SOLUTION and not group:
                found.append(f"{where}: a solution cell that does not follow a your-turn cell")
            missing = [key for key in ("source_hidden", "outputs_hidden")
                       if not _hidden(cell, key) and (key == "source_hidden" or cell.cell_type == "code")]
            if missing:
                found.append(f"{where}: solution not collapsed: set metadata.jupyter."
                             + " and ".join(f"{key} = true" for key in missing))
            group.append((i, cell))
            expect = None
        else:
            expect = None
    close_group()
    if expect == YOUR_TURN:
        found.append(f"{opener}: the exercise is not followed by a code cell tagged your-turn")
    if expect == SOLUTION:
        found.append(f"{opener}: the your-turn cell is not followed by a cell tagged solution")
    if exercises < MIN_EXERCISES:
        found.append(f"{exercises} exercise(s), expected at least {MIN_EXERCISES}")
    if exercises and not checked:
        found.append("no your-turn cell calls cnnlib.checks (e.g. checks.im2col(my_im2col)) or asserts: "
                     "give the student at least one self-check")
    return found


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    root = Path(__file__).resolve().parent.parent
    paths = [Path(a) for a in argv] or sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb")
                                              if not p.name.startswith("00_"))
    bad = 0
    for path in paths:
        found = problems(nbformat.read(str(path), as_version=4))
        bad += bool(found)
        print(f"{path.name}: " + ("ok" if not found else f"{len(found)} problem(s)"))
        for problem in found:
            print(f"  {problem}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
