#!/usr/bin/env python3
"""Generate the navigation of the notebook series.

Usage::

    python tools/make_nav.py            # update notebooks/ and README.md in place
    python tools/make_nav.py --check    # change nothing; exit 1 if anything is out of date

It writes three things, all derived from the notebooks themselves:

1. A navigation cell as the first and as the last cell of every numbered
   notebook ``notebooks/NN_name.ipynb``::

       < [01 Title](01_x.ipynb) | [Contents](00_contents.ipynb) | [03 Title](03_x.ipynb) >

   Navigation cells are markdown cells marked by the cell metadata key
   ``"cnnlib_nav"`` (``"top"`` or ``"bottom"``). They are replaced on every
   run, wherever they are; nothing else in a notebook is edited but the
   slide types (4.): code cells and outputs stay as they are.
2. ``notebooks/00_contents.ipynb``: a markdown-only notebook with the series
   title, a short introduction and the numbered list of notebooks, each with
   its overview line.
3. The contents table in ``README.md``, between the lines
   ``<!-- contents:start -->`` and ``<!-- contents:end -->``.
4. The slide type of every cell of the numbered notebooks
   (``metadata.slideshow.slide_type``, for RISE live slides), from
   tools/make_slides.py, so navigation and slides never disagree.

A notebook's *title* is the first ``# `` heading in its first markdown cell
(navigation cells aside); its *overview* is the sentence in its notebook
metadata ``cnnlib.summary`` (what the notebook covers, written for the
contents), or else the first paragraph after that heading, shortened to about
200 characters at a sentence or word boundary.

Every file is written the way JupyterLab saves notebooks (nbformat 4.5,
1-space JSON indentation, sorted keys, final newline) and only when its text
changes, so a second run changes nothing. The same normalisation also removes
per-cell execution timestamps and stored widget state and sets the kernelspec
name to ``python3``; tools/run_notebooks.py writes notebooks through it too.

Works with any number of notebooks, zero included.
"""
import argparse
import copy
import hashlib
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = "notebooks"
CONTENTS_NAME = "00_contents.ipynb"
NAV_KEY = "cnnlib_nav"
SERIES_TITLE = "CNNs from scratch with NumPy"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
README_START = "<!-- contents:start -->"
README_END = "<!-- contents:end -->"
OVERVIEW_LIMIT = 200

NUMBERED = re.compile(r"^(\d{2})_.+\.ipynb$")
HEADING_1 = re.compile(r"^#\s+(.+?)(?:\s+#+)?\s*$")
# "1. Title", "01: Title", "Notebook 1 - Title"; not "8 filters, ..." (that number is the title's own).
LEADING_NUMBER = re.compile(r"^(?:notebook\s+\d+\s*[.:)\-–—]?|\d+\s*[.:)\-–—])\s+", re.IGNORECASE)
LINK = re.compile(r"(!?)\[([^\]]*)\]\([^)]*\)")

INTRO = (
    "A hands-on course that builds convolutional neural networks from the ground up "
    "with NumPy: from what a convolution computes, through hand-derived and "
    "numerically checked gradients, to a complete CNN trained on MNIST and "
    "Fashion-MNIST, and a side-by-side check against PyTorch. Every notebook runs "
    "offline in well under a minute; run each one top to bottom "
    "(*Run ▸ Run All Cells*), then change things and run it again. "
    "The notebooks import the small library `cnnlib` from this repository; "
    "setup and tests are described in the [README](../README.md)."
)


# ---------------------------------------------------------------- reading

def series_notebooks(nbdir):
    """The numbered notebooks ``NN_*.ipynb`` in ``nbdir``, sorted; the contents notebook excluded."""
    nbdir = Path(nbdir)
    if not nbdir.is_dir():
        return []
    return sorted(p for p in nbdir.iterdir()
                  if p.is_file() and NUMBERED.match(p.name) and p.name != CONTENTS_NAME)


def read_notebook(path):
    """Read a notebook as nbformat 4, with a clear message for a broken file."""
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as exc:  # JSON errors, unknown nbformat versions, ...
        raise SystemExit(f"{path}: cannot read notebook: {exc}") from exc


def is_nav(cell):
    return NAV_KEY in cell.get("metadata", {})


def _paragraphs(text):
    block = []
    for line in text.splitlines():
        if line.strip():
            block.append(line.strip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def _is_prose(block):
    """A plain paragraph: not a heading, list, table, code fence, display maths, image or HTML."""
    first = block[0]
    return not (first.startswith(("#", "|", "```", "~~~", "$$", "<", "![", "---", "***", "___"))
                or re.match(r"^([-*+]|\d+[.)])\s", first))


def _plain(text):
    """Overview text without links (kept: their text) or images: it is shown in two places."""
    text = LINK.sub(lambda m: "" if m.group(1) else m.group(2), text)
    return re.sub(r"\s+", " ", text).strip()


def _balanced(text):
    return (text.count("`") % 2 == 0 and text.count("$") % 2 == 0
            and text.count("**") % 2 == 0)


def shorten(text, limit=OVERVIEW_LIMIT):
    """``text`` if short enough; else whole sentences up to ``limit``, else cut at a word + '…'.

    Never cuts inside inline code, inline maths or bold text.
    """
    if len(text) <= limit:
        return text
    sentences = re.split(r"(?<=[.!?])\s+", text)
    kept = ""
    for sentence in sentences:
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > limit:
            break
        kept = candidate
    if kept and _balanced(kept):
        return kept
    words = text[:limit].split(" ")[:-1] or [text[:limit]]
    while len(words) > 1 and not _balanced(" ".join(words)):
        words.pop()
    return " ".join(words).rstrip(",;:") + "…"


def title_and_overview(nb, fallback_title):
    """(title, overview) of a notebook; (fallback_title, "") where there is none.

    Title: the first ``# `` heading of the first markdown cell that is not a
    navigation cell, without a leading number ("1. ", "01 ", "Notebook 1: ").
    Overview: the first plain paragraph after it, in that cell or the
    markdown cells right after it.
    """
    cells = [c for c in nb.cells if not is_nav(c)]
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for j, line in enumerate(lines):  # noqa: B007 (j is used after the loop)
            m = HEADING_1.match(line)
            if m:
                break
        else:
            return fallback_title, ""
        title = LEADING_NUMBER.sub("", m.group(1)).strip() or fallback_title
        texts = ["\n".join(lines[j + 1:])]
        for later in cells[i + 1:]:
            if later.cell_type != "markdown":
                break
            texts.append(later.source)
        for text in texts:
            for block in _paragraphs(text):
                if _is_prose(block):
                    return title, shorten(_plain(" ".join(line.lstrip("> ") for line in block)))
        return title, ""
    return fallback_title, ""


def notebook_info(path):
    """dict(path, name, number, title, overview) for one numbered notebook."""
    path = Path(path)
    number = path.name[:2]
    fallback = path.stem[3:].replace("_", " ").capitalize()
    nb = read_notebook(path)
    title, overview = title_and_overview(nb, fallback)
    overview = nb.metadata.get("cnnlib", {}).get("summary", overview)
    return {"path": path, "name": path.name, "number": number, "title": title, "overview": overview}


# ---------------------------------------------------------------- writing

def _escape_link_text(text):
    return text.replace("[", r"\[").replace("]", r"\]")


def nav_markdown(prev, nxt):
    """The navigation line; ``prev``/``nxt`` are notebook_info dicts or None."""
    parts = []
    if prev is not None:
        parts.append(f"< [{prev['number']} {_escape_link_text(prev['title'])}]({prev['name']})")
    parts.append(f"[Contents]({CONTENTS_NAME})")
    if nxt is not None:
        parts.append(f"[{nxt['number']} {_escape_link_text(nxt['title'])}]({nxt['name']}) >")
    return " | ".join(parts)


def nav_cell(position, text):
    return nbformat.from_dict({
        "cell_type": "markdown",
        "id": f"nav-{position}",
        "metadata": {NAV_KEY: position},
        "source": text,
    })


def with_nav(nb, text):
    """A copy of ``nb`` with its navigation cells (if any) replaced by fresh ones at top and bottom."""
    nb = copy.deepcopy(nb)
    body = [c for c in nb.cells if not is_nav(c)]
    nb.cells = [nav_cell("top", text)] + body + [nav_cell("bottom", text)]
    return nb


def normalise(nb):
    """Make ``nb`` (in place, and return it) what the repository stores.

    nbformat 4.5 with cell ids (missing ones get stable ids derived from the
    cell's position and source), no per-cell execution timestamps
    (``metadata.execution`` / ``ExecuteTime``), no stored widget state, and
    kernelspec name ``python3``. Sources and outputs are left as they are.
    """
    nb.nbformat = 4
    nb.nbformat_minor = max(int(nb.get("nbformat_minor", 0)), 5)
    used = {c.get("id") for c in nb.cells if c.get("id")}
    for i, cell in enumerate(nb.cells):
        if not cell.get("id"):
            digest = hashlib.sha1(f"{i}:{cell.source}".encode()).hexdigest()[:8]
            new_id, k = f"cell-{digest}", 0
            while new_id in used:
                k += 1
                new_id = f"cell-{digest}-{k}"
            cell["id"] = new_id
            used.add(new_id)
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
    nb.metadata.pop("widgets", None)
    kernelspec = nb.metadata.setdefault("kernelspec", {})
    for key, value in KERNELSPEC.items():
        kernelspec.setdefault(key, value)
    kernelspec["name"] = KERNELSPEC["name"]
    return nb


def notebook_text(nb):
    """The file text of ``nb`` exactly as JupyterLab writes it (after normalising a copy)."""
    text = nbformat.writes(normalise(copy.deepcopy(nb)), version=4)
    return text if text.endswith("\n") else text + "\n"


def contents_notebook(infos):
    """The markdown-only ``00_contents.ipynb`` for the notebooks described by ``infos``."""
    if infos:
        items = []
        for info in infos:
            # The number is part of the text, not a markdown ordered list,
            # which would renumber from 1 if a notebook were missing.
            line = f"- **{info['number']} [{_escape_link_text(info['title'])}]({info['name']})**"
            if info["overview"]:
                line += f"  \n  {info['overview']}"
            items.append(line)
        listing = "\n".join(items)
    else:
        listing = "_No notebooks yet._"
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    nb.cells = [
        nbformat.from_dict({"cell_type": "markdown", "id": "contents-intro", "metadata": {},
                            "source": f"# {SERIES_TITLE}\n\n{INTRO}"}),
        nbformat.from_dict({"cell_type": "markdown", "id": "contents-list", "metadata": {},
                            "source": f"## Contents\n\n{listing}"}),
    ]
    return nb


def readme_contents(infos):
    """The README's contents table (markdown, without the markers)."""
    if not infos:
        return "_No notebooks yet._"
    rows = ["| # | Notebook | What it covers |", "|---|---|---|"]
    for info in infos:
        title = _escape_link_text(info["title"]).replace("|", r"\|")
        overview = info["overview"].replace("|", r"\|")
        rows.append(f"| {info['number']} | [{title}]({NOTEBOOK_DIR}/{info['name']}) | {overview} |")
    return "\n".join(rows)


def readme_with_contents(text, infos):
    """README text with the block between the markers replaced; None if the markers are missing."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return None
    head = text[:start + len(README_START)]
    return f"{head}\n{readme_contents(infos)}\n{text[end:]}"


# ---------------------------------------------------------------- the whole job

def plan(root=ROOT):
    """{path: text it should have} for every file make_nav maintains under ``root``.

    Pure: reads, writes nothing. The README is included only if it exists and
    has both markers.
    """
    import make_slides  # here, not at the top: make_slides imports this module

    root = Path(root)
    nbdir = root / NOTEBOOK_DIR
    paths = series_notebooks(nbdir)
    infos = [notebook_info(p) for p in paths]
    result = {}
    for k, info in enumerate(infos):
        prev = infos[k - 1] if k > 0 else None
        nxt = infos[k + 1] if k + 1 < len(infos) else None
        nb = with_nav(read_notebook(info["path"]), nav_markdown(prev, nxt))
        result[info["path"]] = notebook_text(make_slides.with_slides(nb))
    result[nbdir / CONTENTS_NAME] = notebook_text(contents_notebook(infos))
    readme = root / "README.md"
    if readme.is_file():
        new = readme_with_contents(readme.read_text(encoding="utf-8"), infos)
        if new is not None:
            result[readme] = new
    return result


def current_text(path):
    path = Path(path)
    return path.read_text(encoding="utf-8") if path.exists() else None


def write_text(path, text):
    """Write ``text`` with LF line endings if it differs from the file; True if written."""
    if current_text(path) == text:
        return False
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return True


def update(root=ROOT, check=False, out=None):
    """Bring every maintained file up to date (or, with ``check``, only list them).

    Returns the list of paths that changed (or would change).
    """
    out = out or sys.stdout
    root = Path(root)
    readme = root / "README.md"
    if readme.is_file() and readme_with_contents(readme.read_text(encoding="utf-8"), []) is None:
        print(f"warning: {readme} has no {README_START} ... {README_END} markers; "
              "contents table not written", file=sys.stderr)
    changed = []
    for path, text in plan(root).items():
        if current_text(path) != text:
            changed.append(path)
            if not check:
                write_text(path, text)
    verb = "out of date" if check else "updated"
    for path in changed:
        print(f"{verb}: {path.relative_to(root)}", file=out)
    if not changed:
        print("navigation up to date", file=out)
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="repository root (default: the one this script is in)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if any file is out of date")
    args = parser.parse_args(argv)
    changed = update(args.root, check=args.check)
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
