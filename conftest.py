"""Repository-wide pytest configuration.

* Notebook 09 (PyTorch side by side) needs torch, which requirements.txt leaves
  out on purpose. Without torch the notebook is not collected, and the run
  says so in its header and closing summary.
* The kernels that nbval starts must draw plots with the inline backend, as
  when the notebooks were stored. An exported ``MPLBACKEND`` (``Agg`` is common
  on headless machines) would reach those kernels and make every plotting
  cell fail, so it is removed here; this pytest process itself uses Agg.
* ``--nbval-sanitize-with`` in pyproject.toml is a path relative to the
  repository root; it is made absolute so pytest can start anywhere.
"""
import importlib.util
import os
from pathlib import Path

import matplotlib

ROOT = Path(__file__).resolve().parent
TORCH_NOTEBOOK = "notebooks/09_pytorch_side_by_side.ipynb"
HAVE_TORCH = importlib.util.find_spec("torch") is not None
TORCH_SKIP_MESSAGE = (
    f"torch not installed: {TORCH_NOTEBOOK} skipped "
    "(python -m pip install torch==2.13.0 to include it)"
)

# Paths relative to this file; pytest does not collect them.
collect_ignore = [] if HAVE_TORCH else [TORCH_NOTEBOOK]

_removed_mplbackend = os.environ.pop("MPLBACKEND", None)
matplotlib.use("Agg")


def pytest_configure(config):
    sanitize = getattr(config.option, "nbval_sanitize_with", None)
    if sanitize and not Path(sanitize).is_absolute() and not Path(sanitize).exists():
        candidate = config.rootpath / sanitize
        if candidate.exists():
            config.option.nbval_sanitize_with = str(candidate)


def _notes():
    notes = []
    if not HAVE_TORCH:
        notes.append(TORCH_SKIP_MESSAGE)
    if _removed_mplbackend is not None:
        notes.append(
            f"MPLBACKEND={_removed_mplbackend} unset for the notebook kernels "
            "(their stored plots come from the inline backend)"
        )
    return notes


def pytest_report_header(config):
    return _notes()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for note in _notes():
        terminalreporter.write_line(note)
