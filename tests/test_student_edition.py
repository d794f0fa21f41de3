"""tools/student_edition.py on two small synthetic notebooks: the edition keeps
no solution, clears the your-turn outputs, keeps every other output, runs top
to bottom with its own copy of cnnlib, and is rebuilt identically."""
import hashlib
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import student_edition  # noqa: E402

MARK = "SOLUTION-ONLY"                     # appears in solution cells and nowhere else
HIDDEN = {"jupyter": {"source_hidden": True, "outputs_hidden": True}}


def code(source, tags=(), out=None, metadata=None):
    cell = new_code_cell(source, metadata={**(metadata or {}), **({"tags": list(tags)} if tags else {})})
    if out is not None:
        cell.outputs = [new_output("stream", name="stdout", text=out)]
        cell.execution_count = 1
    return cell


def markdown(source, tags=()):
    return new_markdown_cell(source, metadata={"tags": list(tags)} if tags else {})


def notebook_one():
    return new_notebook(cells=[
        markdown("# One\n\nA synthetic notebook with three exercises."),
        code("import cnnlib\nfrom cnnlib import checks\n\nprint('cnnlib from', cnnlib.__file__)", out="cnnlib from ...\n"),
        markdown("**1. The output size** (warm-up). Write `my_size(size, kernel, stride, pad)`.", ["exercise"]),
        code("def my_size(size, kernel, stride, pad):\n    ...   # your code\n\n\nchecks.output_size(my_size)",
             ["your-turn"], out="output_size: wrong type in case 1 of 6 (size 28, kernel 5, stride 1, pad 0)\n"),
        code(f"# {MARK}\ndef my_size(size, kernel, stride, pad):\n    return (size + 2 * pad - kernel) // stride + 1\n\n\n"
             "assert checks.output_size(my_size)", ["solution"], out="output_size: all 6 cases correct\n", metadata=HIDDEN),
        markdown("Back to the text."),
        code("print(2 + 2)", out="4\n"),
        markdown("**2. A sum** (core). Set `answer` to 2 + 3.", ["exercise"]),
        code("answer = ...   # your code\nprint(answer)", ["your-turn"], out="Ellipsis\n"),
        code(f"answer = 2 + 3   # {MARK}\nprint(answer)", ["solution"], out="5\n", metadata=HIDDEN),
        markdown(f"Why 5: {MARK}.", ["solution"]),
        markdown("**3. A convolution** (stretch). Write `my_conv(x, w, b, stride, pad)`.", ["exercise"]),
        code("def my_conv(x, w, b, stride, pad):\n    raise NotImplementedError('your code')\n\n\n"
             "checks.conv_forward(my_conv)", ["your-turn"], out="conv_forward: your function raised ...\n"),
        code(f"# {MARK}\nfrom cnnlib.functional import conv2d_forward_im2col\n\n\n"
             "def my_conv(x, w, b, stride, pad):\n    return conv2d_forward_im2col(x, w, b, stride, pad)[0]\n\n\n"
             "assert checks.conv_forward(my_conv)", ["solution"], out="conv_forward: all 5 cases correct\n",
             metadata=HIDDEN),
    ])


def notebook_two():
    return new_notebook(cells=[
        markdown("# Two"),
        code("import numpy as np\nfrom cnnlib import checks\nfrom cnnlib.datasets import load_mnist\n\n"
             "(X, y), _ = load_mnist()\nprint(X.shape)", out="(8000, 28, 28)\n"),
        markdown("**1. ReLU backward** (core).", ["exercise"]),
        code("def my_relu_backward(dout, x):\n    return dout   # your code\n\n\nchecks.relu_backward(my_relu_backward)",
             ["your-turn"], out="relu_backward: wrong values ...\n"),
        code(f"# {MARK}\ndef my_relu_backward(dout, x):\n    return dout * (x > 0)\n\n\n"
             "assert checks.relu_backward(my_relu_backward)", ["solution"], out="relu_backward: all 2 cases correct\n",
             metadata=HIDDEN),
        code("print(X.dtype)", out="uint8\n"),
    ])


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    """The synthetic notebooks, and their edition built once with the command line."""
    src = tmp_path_factory.mktemp("notebooks")
    for name, nb in [("01_one.ipynb", notebook_one()), ("02_two.ipynb", notebook_two())]:
        nbformat.write(nb, str(src / name))
    out = tmp_path_factory.mktemp("edition") / "OUT"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "student_edition.py"), str(out), "--notebooks", str(src)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 notebooks without solutions" in result.stdout
    return src, out


def read(out, name):
    return nbformat.read(str(out / "notebooks" / name), as_version=4)


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_no_solution_survives(edition):
    _, out = edition
    for path in sorted((out / "notebooks").glob("*.ipynb")):
        assert MARK not in path.read_text(encoding="utf-8"), path.name
        assert not any("solution" in tags(c) for c in read(out, path.name).cells)
    assert [len(read(out, n).cells) for n in ("01_one.ipynb", "02_two.ipynb")] == [10, 5]


def test_your_turn_outputs_cleared_and_others_kept(edition):
    src, out = edition
    for name in ("01_one.ipynb", "02_two.ipynb"):
        original = [c for c in nbformat.read(str(src / name), as_version=4).cells if "solution" not in tags(c)]
        cells = read(out, name).cells
        assert [c.source for c in cells] == [c.source for c in original]     # nothing else removed or changed
        for before, after in zip(original, cells):
            if "your-turn" in tags(after):
                assert after.outputs == [] and after.execution_count is None
            elif after.cell_type == "code":
                assert after.outputs == before.outputs and after.outputs
    assert sum("exercise" in tags(c) for c in read(out, "01_one.ipynb").cells) == 3


def test_what_the_notebooks_need_is_there(edition):
    _, out = edition
    for name in student_edition.SUPPORT + ["README_STUDENTS.md", "cnnlib/checks.py", "data/README.md"]:
        assert (out / name).exists(), name
    assert not list(out.rglob("__pycache__"))
    readme = (out / "README_STUDENTS.md").read_text(encoding="utf-8")
    assert "python -m pip install -r requirements.txt" in readme
    assert "jupyter lab notebooks/01_one.ipynb" in readme and "notebooks/02_two.ipynb" in readme


def test_the_edition_runs_top_to_bottom_with_its_own_cnnlib(edition):
    _, out = edition
    results = student_edition.execute(sorted((out / "notebooks").glob("*.ipynb")), out, timeout=60, log=lambda _: None)
    assert [(path.name, error) for path, _, error in results] == [("01_one.ipynb", None), ("02_two.ipynb", None)]
    one = results[0][1]
    texts = ["".join(o.get("text", "") for o in c.outputs) for c in one.cells if c.cell_type == "code"]
    assert texts[0].startswith(f"cnnlib from {out / 'cnnlib'}")
    assert texts[1].startswith("output_size: your function returned None")   # the stub's verdict, no error
    assert texts[2] == "4\n"
    assert texts[4].startswith("conv_forward: your function raised NotImplementedError: your code")
    assert "relu_backward: wrong values" in "".join(o.get("text", "") for o in results[1][1].cells[3].outputs)


def digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rebuilding_gives_the_same_files(edition):
    src, out = edition
    before = digest(out)
    (out / "notebooks" / "stale.ipynb").write_text("{}")         # from an older build: must go
    (out / "notes.txt").write_text("mine")                       # not the edition's: must stay
    with pytest.raises(SystemExit, match="not empty.*--force"):
        student_edition.build(out, src, log=lambda _: None)
    student_edition.build(out, src, force=True, log=lambda _: None)
    after = digest(out)
    assert after.pop("notes.txt") and after == before


def test_refuses_to_write_over_its_sources(tmp_path):
    root = tmp_path / "repo"
    for name in ["cnnlib", "data", "notebooks"]:
        (root / name).mkdir(parents=True)
    for name in ["requirements.txt", "pyproject.toml", "README.md"]:
        (root / name).write_text("x")
    nbformat.write(notebook_two(), str(root / "notebooks" / "02_two.ipynb"))
    for out in (root, tmp_path, root / "notebooks"):
        with pytest.raises(SystemExit, match="refusing"):
            student_edition.build(out, root=root, force=True, log=lambda _: None)
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "cnnlib", "data", "notebooks", "pyproject.toml",
                                                      "requirements.txt"]
    with pytest.raises(SystemExit, match="no notebooks"):
        student_edition.build(tmp_path / "out", tmp_path / "empty", root=root, log=lambda _: None)


def test_student_notebook_uses_standard_tags():
    nb = student_edition.student_notebook(notebook_one())
    assert not any("solution" in tags(c) for c in nb.cells)
    assert all(c.outputs == [] for c in nb.cells if "your-turn" in tags(c))
