"""Slide types for live slides (tools/make_slides.py), on small synthetic notebooks,
and a check that the stored notebooks carry them."""
import base64
import os
import struct
import sys
import zlib
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_nav  # noqa: E402
import make_slides  # noqa: E402

QUIET = open(os.devnull, "w")  # noqa: SIM115 (module-lifetime sink for the tools' progress lines)


def png(width, height):
    """A valid blank PNG of the given size, base64 (as notebooks store figures)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + b"\xff" * width for _ in range(height))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return base64.b64encode(data).decode()


def code(source="x = 1", lines_out=0, figure_px=None, tags=()):
    outputs = []
    if lines_out:
        outputs.append(new_output("stream", name="stdout", text="out\n" * lines_out))
    if figure_px:
        outputs.append(new_output("display_data", data={"image/png": png(10, figure_px), "text/plain": "<Figure>"}))
    return new_code_cell(source, execution_count=1, outputs=outputs, metadata={"tags": list(tags)} if tags else {})


def md(source, tags=()):
    return new_markdown_cell(source, metadata={"tags": list(tags)} if tags else {})


def types_of(cells):
    return make_slides.slide_types(new_notebook(cells=cells))


def test_structure_gives_the_slide_types():
    cells = [
        make_nav.nav_cell("top", "< nav >"),
        md("# Title\n\nOverview."),
        code("import numpy as np"),
        md("## Section one\n\nText."),
        code(),
        md("### A subsection"),
        code(),
        md("## Exercises"),
        md("**1. First** (warm-up).", tags=["exercise"]),
        code("...", tags=["your-turn"]),
        code("answer = 1", tags=["solution"]),
        md("A discussion of the answer.", tags=["solution"]),
        md("**2. Second**, not tagged"),
        code("answer = 2", tags=["solution"]),
        make_nav.nav_cell("bottom", "< nav >"),
    ]
    assert types_of(cells) == [
        "skip", "slide", "-", "slide", "-", "subslide", "-", "slide",
        "subslide", "-", "skip", "skip", "subslide", "skip", "skip",
    ]


def test_first_cell_is_a_slide_even_without_a_heading():
    assert types_of([md("Just text."), code(), md("# A late title")]) == ["slide", "-", "slide"]


def test_long_section_splits_into_subslides():
    cells = [md("## Section")] + [code(lines_out=8) for _ in range(6)]     # about 10 lines each
    kinds = types_of(cells)
    assert kinds[0] == "slide" and kinds.count("subslide") >= 1
    height = 0
    for cell, kind in zip(cells, kinds):
        height = make_slides.cell_lines(cell) if kind != "-" else height + make_slides.cell_lines(cell)
        assert height <= make_slides.SCREEN_LINES


def test_code_stays_with_the_prose_that_introduces_it():
    cells = [md("## Section"), code(lines_out=12), md("Now the next step:"), code(lines_out=20)]
    assert types_of(cells) == ["slide", "-", "subslide", "-"]


def test_a_tall_figure_fills_a_slide():
    figure = code(figure_px=make_slides.PIXELS_PER_LINE * make_slides.SCREEN_LINES)
    assert make_slides.cell_lines(figure) > make_slides.SCREEN_LINES
    assert types_of([md("## S"), figure, md("After the figure.")]) == ["slide", "-", "subslide"]


def test_png_height_is_read_from_the_header():
    assert make_slides._png_height(png(7, 123)) == 123
    assert make_slides._png_height("bm90IGEgcG5n") is None


def test_with_slides_changes_only_slide_types():
    nb = new_notebook(cells=[md("# T", tags=["keep"]), code(lines_out=2)])
    nb.cells[1].metadata["slideshow"] = {"slide_type": "fragment", "other": 1}
    out = make_slides.with_slides(nb)
    assert out.cells[0].metadata == {"tags": ["keep"], "slideshow": {"slide_type": "slide"}}
    assert out.cells[1].metadata["slideshow"] == {"slide_type": "-", "other": 1}
    assert [c.source for c in out.cells] == [c.source for c in nb.cells]
    assert out.cells[1].outputs == nb.cells[1].outputs
    assert nb.cells[0].metadata == {"tags": ["keep"]}        # the input is not modified


@pytest.fixture
def tree(tmp_path):
    """Two numbered notebooks with navigation cells, without slide types, and a contents notebook."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name, title in (("01_first.ipynb", "First"), ("02_second.ipynb", "Second")):
        nb = new_notebook(cells=[md(f"# {title}\n\nOverview."), code(lines_out=3), md("## Part"), code()],
                          metadata={"kernelspec": dict(make_nav.KERNELSPEC)})
        make_nav.write_text(nbdir / name, make_nav.notebook_text(make_nav.with_nav(nb, "< nav >")))
    infos = [make_nav.notebook_info(p) for p in make_nav.series_notebooks(nbdir)]
    make_nav.write_text(nbdir / make_nav.CONTENTS_NAME, make_nav.notebook_text(make_nav.contents_notebook(infos)))
    return tmp_path


def snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*.ipynb"))}


def test_update_check_and_idempotence(tree):
    before = snapshot(tree)
    assert make_slides.main(["--root", str(tree), "--check"]) == 1
    assert snapshot(tree) == before                       # --check writes nothing
    changed = make_slides.update(tree, out=QUIET)
    assert sorted(p.name for p in changed) == ["01_first.ipynb", "02_second.ipynb"]
    assert make_slides.main(["--root", str(tree), "--check"]) == 0
    after = snapshot(tree)
    assert make_slides.update(tree, out=QUIET) == [] and snapshot(tree) == after
    nb = nbformat.read(str(tree / "notebooks" / "01_first.ipynb"), as_version=4)
    assert [c.metadata["slideshow"]["slide_type"] for c in nb.cells] == ["skip", "slide", "-", "slide", "-", "skip"]
    assert (tree / "notebooks" / make_nav.CONTENTS_NAME).read_bytes() == before[tree / "notebooks" /
                                                                                  make_nav.CONTENTS_NAME]


def test_check_lists_the_notebooks_out_of_date(tree, capsys):
    make_slides.update(tree, out=QUIET)
    path = tree / "notebooks" / "02_second.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.insert(3, md("### New subsection"))
    path.write_text(nbformat.writes(nb), encoding="utf-8")
    assert make_slides.main(["--root", str(tree), "--check"]) == 1
    out = capsys.readouterr().out
    assert "out of date: notebooks/02_second.ipynb" in out and "01_first" not in out


def test_make_nav_keeps_the_slide_types(tree):
    """make_nav regenerates the navigation cells; it must also give them (and new cells) their slide types."""
    make_nav.update(tree, out=QUIET)
    assert make_slides.update(tree, check=True, out=QUIET) == []
    make_slides.update(tree, out=QUIET)
    assert make_nav.update(tree, check=True, out=QUIET) == []


def test_stored_notebooks_carry_their_slide_types():
    changed = make_slides.update(ROOT, check=True, out=QUIET)
    assert changed == [], ("slide types out of date in " + ", ".join(p.name for p in changed)
                           + ": run python tools/make_slides.py")
