"""The exercise format (tools/exercise_format.py): exercise -> your-turn -> solution,
levels stated, solutions collapsed, at least 3 exercises and one self-check.

``problems()`` is tested on small synthetic notebooks, one good and one bad per
rule; the last test runs it on the real notebooks.
"""
import copy
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from exercise_format import problems  # noqa: E402

HIDDEN = {"source_hidden": True, "outputs_hidden": True}


def exercise(level="core", task="Write `my_size`.", check="checks.output_size(my_size)"):
    """The three cells of one exercise."""
    return [
        new_markdown_cell(f"**1. The output size** ({level}). {task}", metadata={"tags": ["exercise"]}),
        new_code_cell(f"def my_size(size, kernel, stride, pad):\n    ...\n\n\n{check}", metadata={"tags": ["your-turn"]}),
        new_code_cell("def my_size(size, kernel, stride, pad):\n    return (size + 2 * pad - kernel) // stride + 1",
                      metadata={"tags": ["solution"], "jupyter": dict(HIDDEN)}),
    ]


def notebook(*groups, tail=True):
    cells = [new_markdown_cell("# A notebook"), new_code_cell("from cnnlib import checks")]
    for group in groups:
        cells += group
    if tail:
        cells.append(new_markdown_cell("< prev | contents | next >"))
    return new_notebook(cells=cells)


def good():
    return notebook(exercise("warm-up"), exercise("core", check="print(my_size(28, 5, 1, 0))"),
                    exercise("stretch", check="print(my_size(28, 5, 1, 0))"))


def only(found, *words):
    """Exactly one problem, containing every word."""
    assert len(found) == 1, found
    for word in words:
        assert word in found[0], found


def test_a_good_notebook_has_no_problems():
    assert problems(good()) == []
    # levels in other spellings; several solution cells, one of them markdown; assert as the self-check
    ex = exercise("Warm-up", check="assert my_size(28, 5, 1, 0) == 24")
    ex.append(new_code_cell("print('second solution cell')", metadata={"tags": ["solution"], "jupyter": dict(HIDDEN)}))
    ex.append(new_markdown_cell("Why: ...", metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}}))
    assert problems(notebook(ex, exercise("warmup", check="pass"), exercise("STRETCH", check="pass"), tail=False)) == []


def test_too_few_exercises():
    only(problems(notebook(exercise(), exercise())), "2 exercise(s), expected at least 3")
    assert "0 exercise(s), expected at least 3" in problems(notebook())


def test_the_level_is_stated():
    only(problems(notebook(exercise("hard"), exercise(), exercise())), "cell 2", "no level (warm-up, core or stretch)")


def test_your_turn_follows_the_exercise():
    ex = exercise()
    del ex[1]
    found = problems(notebook(ex, exercise(), exercise()))
    assert any("not followed by a code cell tagged your-turn" in p for p in found)
    assert any("does not follow a your-turn cell" in p for p in found)
    ex = exercise()
    found = problems(notebook(exercise(), exercise(), [ex[0], new_code_cell("x = 1"), ex[1], ex[2]]))
    assert any("cell 8" in p and "not followed by a code cell tagged your-turn" in p for p in found)
    assert any("cell 10" in p and "without an exercise cell right before it" in p for p in found)


def test_an_exercise_at_the_very_end_misses_its_cells():
    found = problems(notebook(exercise(), exercise(), exercise()[:1], tail=False))
    only(found, "not followed by a code cell tagged your-turn")
    found = problems(notebook(exercise(), exercise(), exercise()[:2], tail=False))
    only(found, "your-turn cell is not followed by a cell tagged solution")


def test_a_solution_follows_the_your_turn_cell():
    ex = exercise()
    only(problems(notebook(ex[:2], exercise(), exercise())), "cell 3", "not followed by a cell tagged solution")
    swapped = [ex[0], ex[2], ex[1]]
    found = problems(notebook(swapped, exercise(), exercise()))
    assert any("does not follow a your-turn cell" in p for p in found)
    assert any("without an exercise cell right before it" in p for p in found)


def test_solutions_are_collapsed():
    ex = exercise()
    del ex[2].metadata["jupyter"]["outputs_hidden"]
    only(problems(notebook(ex, exercise(), exercise())), "cell 4", "solution not collapsed", "outputs_hidden = true")
    ex = exercise()
    ex[2].metadata["jupyter"] = {"source_hidden": False}
    only(problems(notebook(ex, exercise(), exercise())), "source_hidden = true and outputs_hidden = true")
    ex = exercise()
    ex[2] = new_markdown_cell("The answer is ...", metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}})
    only(problems(notebook(ex, exercise(), exercise())), "the solution has no code cell")


def test_cell_types_and_stubs():
    ex = exercise()
    ex[0] = new_code_cell("# (core) a task in a code cell", metadata={"tags": ["exercise"]})
    only(problems(notebook(ex, exercise(), exercise())), "tagged exercise but is a code cell")
    ex = exercise()
    ex[1].source = "  \n"
    only(problems(notebook(ex, exercise(), exercise())), "empty your-turn cell")
    ex = exercise()
    ex[1] = new_markdown_cell("Your answer:", metadata={"tags": ["your-turn"]})
    only(problems(notebook(ex, exercise(), exercise())), "tagged your-turn but is a markdown cell")


def test_one_role_per_cell():
    ex = exercise()
    ex[1].metadata["tags"] = ["your-turn", "solution"]
    assert any("tagged both your-turn and solution" in p for p in problems(notebook(ex, exercise(), exercise())))


def test_at_least_one_self_check():
    nb = notebook(*(exercise(check="print(my_size(28, 5, 1, 0))") for _ in range(3)))
    only(problems(nb), "no your-turn cell calls cnnlib.checks")
    for check in ["checks.im2col(my_im2col)", "assert my_size(5, 3, 1, 0) == 3",
                  "from cnnlib.checks import output_size\noutput_size(my_size)"]:
        nb = notebook(exercise(check=check), *(exercise(check="pass") for _ in range(2)))
        assert problems(nb) == [], check
    nb = notebook(*(exercise(check="self_checks.im2col(f)  # not cnnlib.checks") for _ in range(3)))
    only(problems(nb), "no your-turn cell calls cnnlib.checks")


def test_problems_does_not_change_the_notebook():
    nb = good()
    before = copy.deepcopy(nb)
    problems(nb)
    assert nb == before


REAL = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb") if 1 <= int(p.name[:2]) <= 10)


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_every_notebook_follows_the_exercise_format(path):
    found = problems(nbformat.read(str(path), as_version=4))
    assert not found, f"{path.name}:\n  " + "\n  ".join(found)
