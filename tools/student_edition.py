#!/usr/bin/env python3
"""Write the student edition: the notebooks without their reference solutions.

Usage::

    python tools/student_edition.py OUT            # OUT must not exist, or be empty
    python tools/student_edition.py OUT --force    # rebuild an existing edition in OUT
    python tools/student_edition.py OUT --execute  # then run every notebook of it, as a student would

What OUT receives:

* ``notebooks/``: every notebook of notebooks/, with the cells tagged
  ``solution`` removed and the outputs of the cells tagged ``your-turn``
  cleared (nbconvert's ``TagRemovePreprocessor``); every other cell keeps
  its stored output, so the edition still reads like the original;
* what the notebooks need to run from there: ``cnnlib/`` (self-checks
  included), ``data/``, ``requirements.txt``, ``pyproject.toml``, ``README.md``;
* ``README_STUDENTS.md``: how to install and run it.

The exercise format (see tools/exercise_format.py) uses standard cell tags,
the ones JupyterLab's property inspector edits: a markdown cell tagged
``exercise``, a code cell tagged ``your-turn``, then cells tagged
``solution``. nbgrader works the same way (solution regions removed from the
release version), so an nbgrader course can adopt these notebooks.

Running it twice gives the same files. With ``--force`` the paths listed
above are replaced; anything else in OUT is left alone. ``--notebooks DIR``
takes the notebooks from DIR instead (the tests use small synthetic ones).
"""
import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from nbconvert.preprocessors import TagRemovePreprocessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_nav  # noqa: E402  (sibling scripts, not a package)
import run_notebooks  # noqa: E402  (the kernel set-up of tools/run_notebooks.py)

ROOT = make_nav.ROOT
SUPPORT = ["cnnlib", "data", "requirements.txt", "pyproject.toml", "README.md"]
NOTEBOOKS, README = "notebooks", "README_STUDENTS.md"
MANAGED = [NOTEBOOKS, README] + SUPPORT           # what --force replaces in OUT
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info")
RELATIVE_LINK = re.compile(r"\]\((\.\./[^)#\s]+)")

README_TEXT = """\
# CNNs from scratch with NumPy: student edition

The notebooks of the series without the reference solutions. Every
exercise is a markdown cell with the task and its level (warm-up, core or
stretch), followed by a "your turn" cell that runs as given (a stub, or a
function to complete): write your answer there.
Many of these cells end with a self-check from `cnnlib.checks`, e.g.
`checks.im2col(my_im2col)`: it runs your function on a few cases and prints
`all N cases correct`, or what is wrong (the case, the shape or the first
wrong value) and a likely cause. It never raises, so the notebook keeps running.

## Install (once)

Python 3.10 or newer. In this folder:

```bash
python -m venv .venv
source .venv/bin/activate            # Windows: .venv\\Scripts\\activate
python -m pip install -r requirements.txt
```

This installs NumPy, SciPy, Matplotlib, JupyterLab and `cnnlib` (the small
library in `cnnlib/`, editable, so you can read and change it).

## Run

```bash
jupyter lab notebooks/{first}
```

Open the notebooks in order and run them top to bottom (*Run > Run All
Cells* works too: the "your turn" cells run as given). Everything works
offline: the datasets are in `data/`. Notebook 09 compares with PyTorch,
which is optional: without it, the notebook says how to install it.

## Notebooks

{notebooks}

The tests, tools and reference solutions are in the full repository; this
folder was written from it by `tools/student_edition.py`.
"""


def student_notebook(nb):
    """``nb`` without solution cells and with the outputs of your-turn cells cleared (in place)."""
    remover = TagRemovePreprocessor(remove_cell_tags={"solution"}, remove_all_outputs_tags={"your-turn"})
    nb, _ = remover.preprocess(nb, {})
    if any("solution" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise RuntimeError("student_edition: a solution cell survived TagRemovePreprocessor")
    return nb


def _is_inside(path, folder):
    return path == folder or folder in path.parents


def _prepare(out, force, protect):
    """Refuse to write over anything precious; with --force, clear what we manage."""
    for p in protect:
        if _is_inside(p, out):
            raise SystemExit(f"student_edition: refusing to write into {out}: it is, or contains, {p}")
    if out.exists() and not out.is_dir():
        raise SystemExit(f"student_edition: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise SystemExit(f"student_edition: {out} is not empty; pass --force to rebuild the edition "
                             f"there (replaces {', '.join(MANAGED)}), or choose another folder")
        for name in MANAGED:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def build(out, nbdir=None, root=ROOT, force=False, log=print):
    """Write the edition into ``out``; returns the paths of its notebooks."""
    root = Path(root).resolve()
    nbdir = Path(nbdir).resolve() if nbdir else root / NOTEBOOKS
    out = Path(out).resolve()
    sources = sorted(nbdir.glob("*.ipynb"))
    if not sources:
        raise SystemExit(f"student_edition: no notebooks in {nbdir}")
    missing = [name for name in SUPPORT if not (root / name).exists()]
    if missing:
        raise SystemExit(f"student_edition: {root} lacks {', '.join(missing)}")
    _prepare(out, force, protect=[root, nbdir])

    written = []
    for src in sources:
        nb = student_notebook(make_nav.read_notebook(src))
        dest = out / NOTEBOOKS / src.name
        make_nav.write_text(dest, make_nav.notebook_text(nb))
        written.append(dest)
    for name in SUPPORT:
        if (root / name).is_dir():
            shutil.copytree(root / name, out / name, ignore=IGNORE)
        else:
            shutil.copy2(root / name, out / name)
    listing = "\n".join(f"- [{p.name}]({NOTEBOOKS}/{p.name})" for p in written)
    make_nav.write_text(out / README, README_TEXT.format(first=written[0].name, notebooks=listing))
    for dest in written:
        for link in sorted(set(RELATIVE_LINK.findall(dest.read_text(encoding="utf-8")))):
            if not (dest.parent / link).exists():
                log(f"note: {dest.name} links to {link}, which the edition does not include")
    log(f"student edition written to {out}: {len(written)} notebooks without solutions")
    return written


def execute(paths, out, timeout=300, log=print):
    """Run each notebook of the edition top to bottom in a fresh kernel, as a
    student would, with the edition's own cnnlib (PYTHONPATH=out). The files are
    not changed. Returns [(path, executed notebook, error message or None)]."""
    saved = dict(os.environ)
    os.environ.pop("MPLBACKEND", None)        # the kernels plot inline, as in run_notebooks.py
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"   # leave no __pycache__ in the edition
    os.environ["PYTHONPATH"] = os.pathsep.join([str(out)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    results = []
    try:
        for path in paths:
            nb, error = make_nav.read_notebook(path), None
            if run_notebooks.has_code(nb):
                try:
                    run_notebooks.execute(nb, path.parent, timeout)
                except Exception as exc:  # CellExecutionError, timeouts, a dead kernel
                    error = run_notebooks._error_summary(exc)
                log(f"{path.name}: " + (f"FAILED: {error}" if error else "ran without error"))
            results.append((path, nb, error))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, metavar="OUT", help="folder to write (must be empty unless --force)")
    parser.add_argument("--force", action="store_true", help="rebuild an existing edition in OUT")
    parser.add_argument("--notebooks", type=Path, metavar="DIR", help="take the notebooks from DIR (default: notebooks/)")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository to copy cnnlib/, data/, ... from")
    parser.add_argument("--execute", action="store_true", help="then run every notebook of the edition")
    parser.add_argument("--timeout", type=float, default=300, metavar="SECONDS", help="time limit per cell with --execute")
    args = parser.parse_args(argv)
    paths = build(args.out, args.notebooks, args.root, args.force)
    if args.execute:
        failed = [path.name for path, _, error in execute(paths, Path(args.out).resolve(), args.timeout) if error]
        print("all notebooks ran" if not failed else f"FAILED: {', '.join(failed)}")
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
