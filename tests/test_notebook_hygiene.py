"""Hygiene rules for every stored notebook in notebooks/.

nbval (``pytest --nbval``) re-runs each notebook and compares outputs; these
tests check what nbval does not: the files are stored the way the series
promises (executed top to bottom in a ``python3`` kernel, links that work,
no output that differs between machines or that nbval cannot compare, no
timestamps, navigation up to date).

The checker functions return a list of problems (empty = fine), so a failure
lists everything wrong with a notebook at once. They are tested below on
small synthetic notebooks, one good and one bad per rule, so this file tests
something even before the first notebook exists.

To fix most failures: ``python tools/run_notebooks.py NN`` (re-executes the
notebook and runs tools/make_nav.py).
"""
import json
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT / "tools"))
import make_nav  # noqa: E402
import run_notebooks  # noqa: E402

# ------------------------------------------------------------------ checkers

ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
BINARY_MIME = ("image/png", "image/jpeg", "image/gif")  # base64: may contain "0x…" by chance

FENCED_CODE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.S)
INLINE_MATH = re.compile(r"\$[^$\n]+\$")
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[^)]*)?\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.M)
HTML_SRC = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def check_kernelspec(nb):
    name = nb.metadata.get("kernelspec", {}).get("name")
    if name != "python3":
        return [f"kernelspec name is {name!r}, expected 'python3'"]
    return []


def check_execution_order(nb):
    """Code cells were run once each, top to bottom, in a fresh kernel: counts 1, 2, 3, ..."""
    problems, counts = [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if not cell.source.strip():
            problems.append(f"cell {i}: empty code cell (delete it; it is never executed)")
            continue
        counts.append(cell.execution_count)
    if counts != list(range(1, len(counts) + 1)):
        problems.append(f"execution counts are {counts}, expected {list(range(1, len(counts) + 1))} "
                        "(restart the kernel and run all cells)")
    return problems


def markdown_link_targets(source):
    """Link targets in a markdown source: [text](t), ![alt](t), [ref]: t, <img src=t>, <a href=t>."""
    text = FENCED_CODE.sub("", source)
    text = DISPLAY_MATH.sub("", text)
    text = INLINE_CODE.sub("", text)
    text = INLINE_MATH.sub("", text)
    return MD_LINK.findall(text) + REF_DEF.findall(text) + HTML_SRC.findall(text)


def check_links(nb, nbdir):
    """Every relative link in a markdown cell points to an existing file (anchors ignored)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for target in markdown_link_targets(cell.source):
            if target.startswith("attachment:"):
                name = unquote(target[len("attachment:"):])
                if name not in cell.get("attachments", {}):
                    problems.append(f"cell {i}: attachment {name!r} not in the cell")
                continue
            if target.startswith(("#", "//")) or SCHEME.match(target):
                continue  # anchors, http(s), mailto, data: ...
            path = unquote(target.split("#", 1)[0].split("?", 1)[0])
            if path.startswith("/"):
                problems.append(f"cell {i}: absolute link {target!r} (use a path relative to the notebook)")
            elif not (Path(nbdir) / path).exists():
                problems.append(f"cell {i}: broken link {target!r}")
    return problems


def _output_texts(output):
    if output.output_type == "stream":
        yield output.get("text", "")
    for mime, value in output.get("data", {}).items():
        if mime in BINARY_MIME:
            continue
        yield value if isinstance(value, str) else json.dumps(value)


def check_outputs(nb):
    """No output that differs per run or that nbval cannot compare.

    Forbidden: error outputs; stderr (warnings); memory addresses (0x and six
    or more hex digits); reprs of matplotlib objects (``[<matplotlib.lines.Line2D
    at 0x...>]``: a plotting call's return value, not a plot); SVG (nbval
    compares SVG text, which differs between matplotlib versions).
    A figure shown with ``plt.show()`` is a display_data with image/png whose
    text/plain is ``<Figure size 640x480 with 1 Axes>``: that pair is fine
    (the PNG is not compared, the text is deterministic). The same text
    anywhere else (an execute_result: the cell ended with a Figure expression
    and shows it twice; or a figure repr without an image) is forbidden.
    """
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            kind = output.output_type
            data = output.get("data", {})
            if kind == "error":
                problems.append(f"cell {i}: error output ({output.get('ename')}: {output.get('evalue')})")
            if kind == "stream" and output.get("name") == "stderr":
                first = output.get("text", "").strip().splitlines()[:1]
                problems.append(f"cell {i}: stderr output {first}")
            if "image/svg+xml" in data:
                problems.append(f"cell {i}: image/svg+xml output (plots must be PNG)")
            if "<svg" in data.get("text/html", ""):
                problems.append(f"cell {i}: text/html output containing <svg")
            for text in _output_texts(output):
                if ADDRESS.search(text):
                    problems.append(f"cell {i}: memory address {ADDRESS.search(text).group()} in output")
                if "<matplotlib." in text:
                    problems.append(f"cell {i}: matplotlib object repr in output (end the cell with plt.show())")
                if "<Figure size" in text and not (kind == "display_data" and "image/png" in data):
                    problems.append(f"cell {i}: figure repr '<Figure size ...>' without a shown plot "
                                    "(end the cell with plt.show())")
    return problems


def check_metadata(nb):
    """No execution timestamps (per cell) and no stored widget state."""
    problems = []
    for i, cell in enumerate(nb.cells):
        for key in ("execution", "ExecuteTime"):
            if key in cell.get("metadata", {}):
                problems.append(f"cell {i}: metadata.{key} timestamps")
    if "widgets" in nb.metadata:
        problems.append("notebook metadata.widgets (stored widget state)")
    return problems


def check_title(nb):
    """The first markdown cell after the navigation starts the notebook with a '# ' title."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and not make_nav.is_nav(cell):
            if any(make_nav.HEADING_1.match(line) for line in cell.source.splitlines()):
                return []
            return ["first markdown cell has no '# Title' heading"]
    return ["no markdown cell with a '# Title' heading"]


def check_nav(path, planned):
    """Navigation cells at the top and bottom, and the file as tools/make_nav.py would write it.

    ``planned`` is make_nav.plan()'s text for this file (None if make_nav does
    not know the file).
    """
    path = Path(path)
    if planned is None:
        return [f"{path.name} is not part of the series: name it NN_title.ipynb"]
    problems = []
    nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    if path.name != make_nav.CONTENTS_NAME:
        if not (nb.cells and make_nav.is_nav(nb.cells[0]) and make_nav.is_nav(nb.cells[-1])):
            problems.append("navigation cells missing at the top or bottom")
        else:
            want = nbformat.reads(planned, as_version=4)
            if nb.cells[0].source != want.cells[0].source or nb.cells[-1].source != want.cells[-1].source:
                problems.append(f"navigation out of date: {nb.cells[0].source!r} "
                                f"should be {want.cells[0].source!r}")
    if not problems and path.read_text(encoding="utf-8") != planned:
        problems.append("file differs from what tools/make_nav.py writes "
                        "(contents, formatting, timestamps or kernelspec)")
    if problems:
        problems.append("fix: python tools/make_nav.py")
    return problems


def check_notebook(nb, nbdir):
    """All content rules (not navigation) for one notebook."""
    return (check_kernelspec(nb) + check_execution_order(nb) + check_links(nb, nbdir)
            + check_outputs(nb) + check_metadata(nb))


# ------------------------------------------------------- the real notebooks

STORED = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.fixture(scope="module")
def planned():
    return make_nav.plan(ROOT)


@pytest.mark.parametrize("path", STORED, ids=[p.name for p in STORED])
def test_stored_notebook_content(path):
    nb = nbformat.read(str(path), as_version=4)
    problems = check_notebook(nb, path.parent)
    if path.name != make_nav.CONTENTS_NAME:
        problems += check_title(nb)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", STORED, ids=[p.name for p in STORED])
def test_stored_notebook_navigation(path, planned):
    problems = check_nav(path, planned.get(path))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_contents_notebook_and_readme_table_up_to_date(planned):
    """notebooks/00_contents.ipynb exists and it and README's table list the current notebooks."""
    contents = NOTEBOOKS / make_nav.CONTENTS_NAME
    assert contents.is_file(), "notebooks/00_contents.ipynb missing: python tools/make_nav.py"
    readme = ROOT / "README.md"
    assert readme in planned, f"README.md lacks the {make_nav.README_START} / {make_nav.README_END} markers"
    assert readme.read_text(encoding="utf-8") == planned[readme], \
        "README contents table out of date: python tools/make_nav.py"


def test_readme_links_resolve():
    readme = ROOT / "README.md"
    nb = new_notebook(cells=[new_markdown_cell(readme.read_text(encoding="utf-8"))])
    assert check_links(nb, ROOT) == []


# ---------------------------------------- the checkers, on synthetic notebooks

def good_notebook():
    nb = new_notebook(metadata={"kernelspec": dict(make_nav.KERNELSPEC)})
    nb.cells = [
        new_markdown_cell("# Title\n\nOverview. See [notebook](other.ipynb#part), "
                          "[the web](https://example.org), [below](#section) and "
                          "`[not a link](nowhere.ipynb)`.\n\n<img src=\"pic.png\" width=50>"),
        new_code_cell("x = 1\nprint(x)", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="1\n")]),
        new_markdown_cell("$$\\sum_i [a](b)$$"),
        new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()", execution_count=2,
                      outputs=[new_output("display_data", data={
                          "image/png": "iVBORw0KGgo0xdeadbeef==",
                          "text/plain": "<Figure size 640x480 with 1 Axes>"})]),
        new_code_cell("x + 1", execution_count=3,
                      outputs=[new_output("execute_result", execution_count=3, data={"text/plain": "2"})]),
    ]
    return nb


@pytest.fixture
def nbdir(tmp_path):
    (tmp_path / "other.ipynb").write_text("{}")
    (tmp_path / "pic.png").write_bytes(b"")
    return tmp_path


def test_good_notebook_passes_every_check(nbdir):
    assert check_notebook(good_notebook(), nbdir) == []
    assert check_title(good_notebook()) == []


def test_no_code_cells_is_fine(nbdir):
    nb = new_notebook(metadata={"kernelspec": dict(make_nav.KERNELSPEC)},
                      cells=[new_markdown_cell("# Only text")])
    assert check_notebook(nb, nbdir) == []


@pytest.mark.parametrize("kernelspec", [{}, {"name": "python"}, {"name": "venv-cnn"}])
def test_bad_kernelspec(kernelspec):
    nb = good_notebook()
    nb.metadata["kernelspec"] = kernelspec
    assert len(check_kernelspec(nb)) == 1


@pytest.mark.parametrize("counts", [[1, 3, 2], [None, None, None], [1, 2, 4], [2, 3, 4], [1, 1, 2]])
def test_bad_execution_order(counts):
    nb = good_notebook()
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell, count in zip(code, counts):
        cell.execution_count = count
    problems = check_execution_order(nb)
    assert len(problems) == 1 and "execution counts" in problems[0]


def test_empty_code_cell_is_reported(nbdir):
    nb = good_notebook()
    nb.cells.append(new_code_cell(""))
    problems = check_execution_order(nb)
    assert len(problems) == 1 and "empty code cell" in problems[0]


@pytest.mark.parametrize("markdown, expected", [
    ("[gone](missing.ipynb)", "broken link 'missing.ipynb'"),
    ("[gone](missing.ipynb#anchor)", "broken link 'missing.ipynb#anchor'"),
    ("![img](figs/none.png)", "broken link 'figs/none.png'"),
    ('<img src="none.png">', "broken link 'none.png'"),
    ("[ref]: ../nowhere.md", "broken link '../nowhere.md'"),
    ("[abs](/etc/passwd)", "absolute link"),
    ("![x](attachment:a.png)", "attachment 'a.png' not in the cell"),
])
def test_bad_links(nbdir, markdown, expected):
    nb = good_notebook()
    nb.cells.append(new_markdown_cell(markdown))
    problems = check_links(nb, nbdir)
    assert len(problems) == 1 and expected in problems[0], problems


def test_link_with_spaces_and_title_resolves(nbdir):
    (nbdir / "a b.png").write_bytes(b"")
    nb = good_notebook()
    nb.cells.append(new_markdown_cell('![x](a%20b.png "a title") and [o](<other.ipynb>)'))
    assert check_links(nb, nbdir) == []


BAD_OUTPUTS = {
    "error": (new_output("error", ename="ValueError", evalue="bad", traceback=[]), "error output"),
    "stderr": (new_output("stream", name="stderr", text="UserWarning: careful\n"), "stderr"),
    "address": (new_output("stream", name="stdout", text="<object at 0x7f3a2c1d5e90>\n"), "memory address"),
    "line2d": (new_output("execute_result", execution_count=3,
                          data={"text/plain": "[<matplotlib.lines.Line2D at 0x7f3a2c1d5e90>]"}),
               "matplotlib object repr"),
    "figure_result": (new_output("execute_result", execution_count=3, data={
        "image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 640x480 with 1 Axes>"}), "figure repr"),
    "figure_no_image": (new_output("display_data", data={"text/plain": "<Figure size 640x480 with 0 Axes>"}),
                        "figure repr"),
    "svg": (new_output("display_data", data={"image/svg+xml": "<svg></svg>", "text/plain": "fig"}),
            "image/svg+xml"),
    "html_svg": (new_output("display_data", data={"text/html": "<div><svg></svg></div>"}), "<svg"),
}


@pytest.mark.parametrize("name", sorted(BAD_OUTPUTS))
def test_bad_outputs(name):
    output, expected = BAD_OUTPUTS[name]
    nb = good_notebook()
    nb.cells[-1].outputs = [output]
    problems = check_outputs(nb)
    assert problems and all(expected in p or "memory address" in p for p in problems), problems
    assert any(expected in p for p in problems)


def test_hex_in_png_is_not_an_address():
    assert check_outputs(good_notebook()) == []  # its PNG holds "0xdeadbeef"


@pytest.mark.parametrize("where", ["execution", "ExecuteTime", "widgets"])
def test_bad_metadata(where):
    nb = good_notebook()
    if where == "widgets":
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    else:
        nb.cells[1].metadata[where] = {"iopub.execute_input": "2024-01-01T00:00:00.000Z"}
    problems = check_metadata(nb)
    assert len(problems) == 1 and where in problems[0]


def test_missing_title():
    nb = good_notebook()
    nb.cells[0].source = "Some text without a heading\n\n## Section"
    assert check_title(nb) == ["first markdown cell has no '# Title' heading"]


# ------------------------------------------------------ tools/make_nav.py

def write_nb(path, nb):
    path.write_text(nbformat.writes(nb), encoding="utf-8")


def series_notebook(title, overview, code="print(1)"):
    nb = new_notebook(metadata={"kernelspec": dict(make_nav.KERNELSPEC)})
    nb.cells = [
        new_markdown_cell(f"# {title}\n\n{overview}\n\n## You will learn\n- things"),
        new_code_cell(code, execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="1\n")]),
        new_markdown_cell("## Summary"),
    ]
    return nb


@pytest.fixture
def tree(tmp_path):
    """A repository with three notebooks and a README with contents markers."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_nb(nbdir / "01_first.ipynb", series_notebook("1. First steps", "Begin here. It is easy."))
    write_nb(nbdir / "02_second.ipynb", series_notebook("Second | part", "Uses [links](01_first.ipynb)."))
    write_nb(nbdir / "03_third.ipynb", series_notebook("Third", "x " * 150))
    (tmp_path / "README.md").write_text(
        f"# Project\n\n{make_nav.README_START}\nold table\n{make_nav.README_END}\n\nMore.\n", encoding="utf-8")
    return tmp_path


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_nav_writes_navigation(tree):
    make_nav.update(tree)
    nbdir = tree / "notebooks"
    first = nbformat.read(str(nbdir / "01_first.ipynb"), as_version=4)
    second = nbformat.read(str(nbdir / "02_second.ipynb"), as_version=4)
    third = nbformat.read(str(nbdir / "03_third.ipynb"), as_version=4)
    assert first.cells[0].source == "[Contents](00_contents.ipynb) | [02 Second | part](02_second.ipynb) >"
    assert second.cells[0].source == ("< [01 First steps](01_first.ipynb) | [Contents](00_contents.ipynb) | "
                                      "[03 Third](03_third.ipynb) >")
    assert third.cells[-1].source == "< [02 Second | part](02_second.ipynb) | [Contents](00_contents.ipynb)"
    for nb in (first, second, third):
        assert len(nb.cells) == 5
        assert [make_nav.is_nav(c) for c in nb.cells] == [True, False, False, False, True]
        assert nb.cells[0].source == nb.cells[-1].source
    for path in nbdir.glob("*.ipynb"):
        nb = nbformat.read(str(path), as_version=4)
        assert check_links(nb, nbdir) == [], path
        assert check_nav(path, make_nav.plan(tree).get(path)) == []


def test_make_nav_leaves_code_cells_and_outputs_alone(tree):
    path = tree / "notebooks" / "02_second.ipynb"
    before = nbformat.read(str(path), as_version=4)
    make_nav.update(tree)
    after = nbformat.read(str(path), as_version=4)
    body = [c for c in after.cells if not make_nav.is_nav(c)]
    for cell in body:
        assert cell.metadata.pop("slideshow")["slide_type"]   # the one thing make_nav adds: tools/make_slides.py
    assert body == before.cells


def test_make_nav_second_run_changes_nothing(tree):
    assert make_nav.update(tree) != []
    first = snapshot(tree)
    assert make_nav.update(tree) == []
    assert make_nav.main(["--root", str(tree), "--check"]) == 0
    assert snapshot(tree) == first


def test_make_nav_check_mode_reports_and_writes_nothing(tree):
    before = snapshot(tree)
    assert make_nav.main(["--root", str(tree), "--check"]) == 1
    assert snapshot(tree) == before


def test_make_nav_contents_and_readme(tree):
    make_nav.update(tree)
    contents = nbformat.read(str(tree / "notebooks" / make_nav.CONTENTS_NAME), as_version=4)
    assert contents.metadata.kernelspec.name == "python3"
    assert all(c.cell_type == "markdown" for c in contents.cells)
    listing = contents.cells[-1].source
    assert "- **01 [First steps](01_first.ipynb)**  \n  Begin here. It is easy." in listing
    assert "[Second | part](02_second.ipynb)" in listing
    assert "Uses links." in listing  # links in an overview are flattened to their text
    readme = (tree / "README.md").read_text(encoding="utf-8")
    assert "old table" not in readme and readme.endswith(f"{make_nav.README_END}\n\nMore.\n")
    assert r"| 02 | [Second \| part](notebooks/02_second.ipynb) | Uses links. |" in readme
    third_row = next(line for line in readme.splitlines() if line.startswith("| 03"))
    assert third_row.endswith("… |") and len(third_row) < 300


def test_make_nav_replaces_stale_nav_cells(tree):
    make_nav.update(tree)
    (tree / "notebooks" / "03_third.ipynb").unlink()
    make_nav.update(tree)
    second = nbformat.read(str(tree / "notebooks" / "02_second.ipynb"), as_version=4)
    assert second.cells[0].source == "< [01 First steps](01_first.ipynb) | [Contents](00_contents.ipynb)"
    assert sum(make_nav.is_nav(c) for c in second.cells) == 2


def test_make_nav_with_no_notebooks(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "README.md").write_text(f"{make_nav.README_START}\n{make_nav.README_END}\n", encoding="utf-8")
    make_nav.update(tmp_path)
    contents = nbformat.read(str(tmp_path / "notebooks" / make_nav.CONTENTS_NAME), as_version=4)
    assert "No notebooks yet" in contents.cells[-1].source
    assert make_nav.update(tmp_path) == []


def test_make_nav_normalises_format(tree):
    path = tree / "notebooks" / "01_first.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["cells"][1]["metadata"]["execution"] = {"iopub.status.idle": "2024-01-01T00:00:00Z"}
    nb["metadata"]["widgets"] = {}
    nb["metadata"]["kernelspec"]["name"] = "other"
    for cell in nb["cells"]:
        del cell["id"]
    nb["nbformat_minor"] = 4
    path.write_text(json.dumps(nb, indent=4), encoding="utf-8")
    make_nav.update(tree)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n "cells": [\n  {\n') and text.endswith("}\n")
    stored = nbformat.reads(text, as_version=4)
    assert check_metadata(stored) == [] and check_kernelspec(stored) == []
    assert stored.nbformat_minor == 5 and all(c.get("id") for c in stored.cells)
    assert make_nav.update(tree) == []


@pytest.mark.parametrize("source, title, overview", [
    ("# Convolution\n\nWhat it computes.\n\nMore.", "Convolution", "What it computes."),
    ("# 4. Eight filters\n\n## Sub\n\n- list\n\nThe overview.", "Eight filters", "The overview."),
    ("# 8 filters, max-pooling\n\ntext", "8 filters, max-pooling", "text"),
    ("# Notebook 3: Debugging\nline one\nline two", "Debugging", "line one line two"),
    ("Intro\n\n# Late title", "Late title", ""),
    ("Intro without a title\n\n## Section\n\ntext", "Fallback", ""),
])
def test_title_and_overview(source, title, overview):
    nb = new_notebook(cells=[new_markdown_cell(source)])
    assert make_nav.title_and_overview(nb, "Fallback") == (title, overview)


def test_overview_from_next_cell_and_nav_skipped():
    nb = new_notebook(cells=[make_nav.nav_cell("top", "nav"), new_markdown_cell("# T"),
                             new_markdown_cell("Second cell text.")])
    assert make_nav.title_and_overview(nb, "F") == ("T", "Second cell text.")


def test_shorten():
    assert make_nav.shorten("Short.") == "Short."
    text = "First sentence here. " + "Second sentence is much longer " * 10
    assert make_nav.shorten(text, 60) == "First sentence here."
    cut = make_nav.shorten("word " * 100, 50)
    assert cut.endswith("…") and len(cut) <= 51
    assert make_nav.shorten("a " * 20 + "`code that is long`", 50).count("`") % 2 == 0


# ------------------------------------------------------ tools/run_notebooks.py

def test_select_notebooks(tree):
    nbdir = tree / "notebooks"
    assert [p.name for p in run_notebooks.select_notebooks(nbdir, [])] == \
        ["01_first.ipynb", "02_second.ipynb", "03_third.ipynb"]
    assert [p.name for p in run_notebooks.select_notebooks(nbdir, ["3", "01"])] == \
        ["03_third.ipynb", "01_first.ipynb"]
    assert [p.name for p in run_notebooks.select_notebooks(nbdir, [str(nbdir / "02_second.ipynb")])] == \
        ["02_second.ipynb"]
    with pytest.raises(SystemExit, match="no notebook matches '07'"):
        run_notebooks.select_notebooks(nbdir, ["07"])


def test_run_notebooks_executes_in_place(tree, capsys):
    """One good notebook (with a plot) and one failing one, in real kernels."""
    nbdir = tree / "notebooks"
    good = series_notebook("First", "Overview.",
                           code="import os, sys\nimport matplotlib.pyplot as plt\n"
                                "print(os.path.basename(os.getcwd()))\n"
                                f"print(sys.executable == {sys.executable!r})")
    good.cells.insert(2, new_code_cell("plt.plot([1, 2, 3])\nplt.show()"))
    good.cells.insert(3, new_code_cell("2 + 3"))
    write_nb(nbdir / "01_first.ipynb", good)
    bad = series_notebook("Second", "Fails.", code="raise ValueError('on purpose')")
    write_nb(nbdir / "02_second.ipynb", bad)
    (nbdir / "03_third.ipynb").unlink()

    status = run_notebooks.main(["--root", str(tree), "--timeout", "60"])
    out = capsys.readouterr().out
    assert status == 1
    assert "01_first.ipynb: ok" in out and "02_second.ipynb: FAILED" in out and "on purpose" in out
    assert "00_contents.ipynb: no code cells, skipped" in out

    path = nbdir / "01_first.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    assert check_notebook(nb, nbdir) == []
    assert check_nav(path, make_nav.plan(tree).get(path)) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].outputs[0].text == "notebooks\nTrue\n"  # cwd notebooks/, kernel in this Python
    assert code[1].outputs[0].output_type == "display_data" and "image/png" in code[1].outputs[0].data
    assert code[2].outputs[0].data["text/plain"] == "5"

    # The failed notebook kept its previous version (navigation added by make_nav only).
    bad_before = (nbdir / "02_second.ipynb").read_text(encoding="utf-8")
    stored_bad = nbformat.reads(bad_before, as_version=4)
    stored_body = [c for c in stored_bad.cells if not make_nav.is_nav(c)]
    for cell in stored_body:
        cell.metadata.pop("slideshow")
    assert stored_body == bad.cells

    # Re-running the good one leaves the file byte-identical.
    before = path.read_bytes()
    assert run_notebooks.main(["--root", str(tree), "01"]) == 0
    assert path.read_bytes() == before
    assert "file unchanged" in capsys.readouterr().out

    # --write-failed stores the partial run, error included.
    assert run_notebooks.main(["--root", str(tree), "--write-failed", "2"]) == 1
    written = nbformat.read(str(nbdir / "02_second.ipynb"), as_version=4)
    errors = [o for c in written.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].evalue == "on purpose"


def test_run_notebooks_stores_a_progress_bar_as_its_final_lines():
    pieces = ["\repoch 1 [--] 1/2", "\repoch 1 [##] 2/2 loss 0.5", "\n", "\repoch 2 [--] 1/2",
              "\repoch 2 [##] 2/2 loss 0.3\n"]
    outputs = [new_output("stream", name="stdout", text=t) for t in pieces]
    outputs.insert(3, new_output("display_data", data={"text/plain": "a figure"}))
    merged = run_notebooks.merge_streams(outputs)
    assert [o.output_type for o in merged] == ["stream", "display_data", "stream"]
    assert merged[0].text == "epoch 1 [##] 2/2 loss 0.5\n"
    assert merged[2].text == "epoch 2 [##] 2/2 loss 0.3\n"
