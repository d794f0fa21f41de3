#!/usr/bin/env python3
"""Re-execute the notebooks in place, to refresh their stored outputs.

Usage::

    python tools/run_notebooks.py              # every notebook in notebooks/, in order
    python tools/run_notebooks.py 07 09        # by number prefix
    python tools/run_notebooks.py notebooks/04_debugging_backprop.ipynb
    python tools/run_notebooks.py --write-failed 04   # keep the partial run of a failing notebook
    python tools/run_notebooks.py --no-nav 10         # leave navigation and contents alone

What it does, in order:

1. Runs tools/make_nav.py, so navigation cells, notebooks/00_contents.ipynb
   and the README contents table are current.
2. Executes each selected notebook top to bottom in a fresh ``python3``
   kernel of the Python running this script (as ``pytest --nbval
   --nbval-current-env`` does), with notebooks/ as the working directory and
   a per-cell time limit. Outputs and execution counts are cleared first, as
   in *Restart Kernel and Run All Cells*. Notebooks without code cells (the
   contents) are left alone.
3. Writes each notebook that ran without error back in place, with the slide
   types of tools/make_slides.py derived from its new outputs: no per-cell
   timestamps, no widget state, kernelspec ``python3``, nbformat 4.5 JSON with
   1-space indentation and a final newline, exactly as JupyterLab saves it,
   so re-running an unchanged notebook leaves the file unchanged. A notebook
   that fails is not written (its previous version stays) unless
   ``--write-failed`` is given; the run goes on with the next one.
4. Prints each notebook's status and wall-clock time; exits 1 if any failed.

Afterwards, ``python -m pytest`` checks the refreshed notebooks (nbval and
tests/test_notebook_hygiene.py); review the changes with ``git diff``.
"""
import argparse
import os
import re
import sys
import time
from pathlib import Path

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from traitlets import default

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_nav  # noqa: E402  (a sibling script, not a package)
import make_slides  # noqa: E402

DEFAULT_TIMEOUT = 300


class CurrentEnvKernelSpecManager(KernelSpecManager):
    """Resolves ``python3`` to an ipykernel of this very interpreter.

    Without this a ``python3`` kernelspec installed elsewhere on the machine
    (another Python, without cnnlib) could run the notebooks.
    """

    def get_kernel_spec(self, kernel_name):
        if kernel_name == make_nav.KERNELSPEC["name"]:
            import ipykernel.kernelspec
            return KernelSpec(resource_dir=ipykernel.kernelspec.RESOURCES,
                              **ipykernel.kernelspec.get_kernel_dict())
        return super().get_kernel_spec(kernel_name)


class CurrentEnvKernelManager(AsyncKernelManager):
    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self):
        return CurrentEnvKernelSpecManager(data_dir=self.data_dir)


def select_notebooks(nbdir, names):
    """Paths of the notebooks to run: all ``*.ipynb`` in ``nbdir``, or those named.

    A name is a path to a notebook, or a number prefix: ``7``, ``07`` or ``07_full``.
    Raises SystemExit naming the argument that matches nothing.
    """
    nbdir = Path(nbdir).resolve()
    everything = sorted(nbdir.glob("*.ipynb")) if nbdir.is_dir() else []
    if not names:
        return everything
    chosen = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            matches = [path.resolve()]
        else:
            prefix = name.zfill(2) if name.isdigit() else name
            matches = [p for p in everything if p.name.startswith(prefix)]
        if not matches:
            known = ", ".join(p.name for p in everything) or "none"
            raise SystemExit(f"run_notebooks: no notebook matches {name!r} (notebooks: {known})")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def has_code(nb):
    return any(c.cell_type == "code" and c.source.strip() for c in nb.cells)


def execute(nb, workdir, timeout):
    """Run ``nb`` in place in a fresh kernel. Raises what nbclient raises on failure."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=make_nav.KERNELSPEC["name"],
        kernel_manager_class=CurrentEnvKernelManager,
        resources={"metadata": {"path": str(workdir)}},
        record_timing=False,        # no per-cell timestamps in the files
        store_widget_state=False,   # no widget state either
        allow_errors=False,         # stop at the first error
        # The kernel's own log (a TCP-without-encryption warning on every start)
        # is noise here; errors still show, and notebook output is unaffected.
        extra_arguments=["--log-level=ERROR"],
    )
    client.execute()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)


OVERWRITTEN = re.compile(r"[^\n]*\r(?=[^\n])")    # text a later \r on the same line redraws


def merge_streams(outputs):
    """Join neighbouring stdout (or stderr) pieces into one and keep only what a
    progress bar's last redraw (after \\r) shows, as a terminal would: the stored
    file then holds one line per epoch, not every redraw. nbval compares streams
    the same way, so stored and fresh outputs still match."""
    merged = []
    for out in outputs:
        if (out.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == out.name):
            merged[-1].text += out.text
        else:
            merged.append(out)
    for out in merged:
        if out.output_type == "stream":
            out.text = OVERWRITTEN.sub("", out.text)
    return merged


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error_summary(exc):
    """One line: "ValueError: message" for a failing cell, else the exception itself."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        text = f"{ename}: {evalue}"
    else:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        text = lines[-1] if lines else type(exc).__name__
    return ANSI.sub("", text).strip()


def stored_text(path, nb):
    """The file text of an executed notebook. Slide types depend on the height of the
    outputs (tools/make_slides.py), so those of a numbered notebook are derived again."""
    if make_nav.NUMBERED.match(Path(path).name) and Path(path).name != make_nav.CONTENTS_NAME:
        nb = make_slides.with_slides(nb)
    return make_nav.notebook_text(nb)


def run(paths, timeout=DEFAULT_TIMEOUT, write_failed=False, out=None):
    """Execute and write back ``paths``; returns a list of (path, status, seconds, note)."""
    out = out or sys.stdout
    results = []
    for path in paths:
        path = Path(path)
        nb = make_nav.read_notebook(path)
        if not has_code(nb):
            results.append((path, "skipped", 0.0, "no code cells"))
            print(f"{path.name}: no code cells, skipped", file=out, flush=True)
            continue
        print(f"{path.name}: running ...", file=out, flush=True)
        start = time.perf_counter()
        try:
            execute(nb, path.parent, timeout)
        except Exception as exc:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
            seconds = time.perf_counter() - start
            note = _error_summary(exc)
            if write_failed:
                make_nav.write_text(path, stored_text(path, nb))
                note += " (partial run written)"
            else:
                note += " (file left unchanged)"
            results.append((path, "FAILED", seconds, note))
            print(f"{path.name}: FAILED after {seconds:.1f} s: {note}", file=out, flush=True)
            continue
        seconds = time.perf_counter() - start
        written = make_nav.write_text(path, stored_text(path, nb))
        note = "file updated" if written else "file unchanged"
        results.append((path, "ok", seconds, note))
        print(f"{path.name}: ok in {seconds:.1f} s, {note}", file=out, flush=True)
    return results


def summary(results, out=None):
    out = out or sys.stdout
    if not results:
        print("\nno notebooks to run", file=out)
        return
    width = max(len(p.name) for p, *_ in results)
    print("\nsummary:", file=out)
    for path, status, seconds, note in results:
        print(f"  {path.name:<{width}}  {status:<7} {seconds:6.1f} s  {note}", file=out)
    failed = [p.name for p, status, *_ in results if status == "FAILED"]
    total = sum(s for _, _, s, _ in results)
    print(f"total {total:.1f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "all ran"), file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="paths or number prefixes (default: every notebook in notebooks/)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"time limit per cell (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--write-failed", action="store_true",
                        help="also write back notebooks that failed, with their partial outputs")
    parser.add_argument("--no-nav", action="store_true",
                        help="skip step 1 (navigation), e.g. while others edit other notebooks")
    parser.add_argument("--root", type=Path, default=make_nav.ROOT,
                        help="repository root (default: the one this script is in)")
    args = parser.parse_args(argv)

    nbdir = args.root / make_nav.NOTEBOOK_DIR
    select_notebooks(nbdir, args.notebooks)  # a typo fails before anything is written
    # The stored plots come from the inline backend; an exported MPLBACKEND
    # (Agg on a headless machine) would reach the kernels and drop every figure.
    if os.environ.pop("MPLBACKEND", None) is not None:
        print("note: MPLBACKEND unset for the notebook kernels", flush=True)
    if not args.no_nav:
        make_nav.update(args.root)
    paths = select_notebooks(nbdir, args.notebooks)  # again: make_nav may have added 00_contents
    results = run(paths, timeout=args.timeout, write_failed=args.write_failed)
    summary(results)
    return 1 if any(status == "FAILED" for _, status, *_ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
