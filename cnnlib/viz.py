"""Plotting helpers for the notebooks (matplotlib only).

Every plotting function creates its figure with pyplot and returns the
``Figure``; the notebook cell ends with ``plt.show()``, which displays it
once (a cell that ends with the returned figure instead would show it twice,
and nbval would compare a ``<Figure ...>`` text). Bad input raises
``ValueError`` naming the expected and the actual shape or value.

Functions
---------
show_images(images, labels=None, ...)       a grid of images
show_filters(W, ...)                        convolution filters (F, C, KH, KW)
plot_history(history)                       loss and accuracy per epoch
confusion_matrix(y_true, y_pred, n)         counts, rows true, columns predicted
plot_confusion_matrix(y_true, y_pred, names)
plot_curves(xs, ys_dict, xlabel, ylabel)    a few named curves on one axes
"""
import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

__all__ = ["show_images", "show_filters", "plot_history", "confusion_matrix",
           "plot_confusion_matrix", "plot_curves"]

MAX_PANELS = 400  # a grid of more small images takes long to draw and shows nothing


def _grid(n, ncols, panel_size, figsize, extra_height=0.0):
    """Figure with ``n`` axes in rows of ``ncols`` (unused grid cells removed)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    if figsize is None:
        figsize = (ncols * panel_size[0], nrows * panel_size[1] + extra_height)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    axes = axes.ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    for ax in axes[:n]:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, list(axes[:n])


def _check_count(n, what):
    if n == 0:
        raise ValueError(f"{what}: expected at least one image, got 0")
    if n > MAX_PANELS:
        raise ValueError(f"{what}: expected at most {MAX_PANELS} images, got {n}; "
                         f"pass a slice such as images[:20]")


def _as_rgb_unit(img):
    """An (H, W, 3) image in [0, 1]: uint8 / 255, floats already in [0, 1] as they are, others min-max scaled."""
    if img.dtype == np.uint8:
        return img / 255.0
    img = img.astype(np.float64)
    lo, hi = img.min(), img.max()
    if lo >= 0.0 and hi <= 1.0:
        return img
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def show_images(images, labels=None, ncols=10, cmap="gray", titles=None, figsize=None):
    """Show images in a grid, without axis ticks.

    images: (N, H, W) or (N, 1, H, W) grayscale, or (N, H, W, 3) RGB
        ((N, 3, H, W) is accepted too and transposed). Grayscale images are
        scaled per image (any range works: uint8, [0, 1], standardised);
        RGB uint8 is divided by 255, float RGB outside [0, 1] is min-max scaled.
    labels: (N,) values shown as small titles, e.g. class ids.
    titles: (N,) strings shown as small titles instead, e.g. "pred 3\\ntrue 5".
        Give labels or titles, not both.
    ncols: images per row (fewer if N is smaller).
    figsize: (width, height) in inches; default about 1 inch per image.

    Returns the Figure, with one Axes per image.
    """
    images = np.asarray(images)
    rgb = False
    if images.ndim == 3:
        pass
    elif images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    elif images.ndim == 4 and images.shape[-1] == 3:
        rgb = True
    elif images.ndim == 4 and images.shape[1] == 3:
        images = images.transpose(0, 2, 3, 1)
        rgb = True
    else:
        raise ValueError("show_images: expected images of shape (N, H, W), (N, 1, H, W) or "
                         f"(N, H, W, 3), got {images.shape}")
    n = len(images)
    _check_count(n, "show_images")
    if labels is not None and titles is not None:
        raise ValueError("show_images: expected labels or titles, got both")
    captions = labels if labels is not None else titles
    if captions is not None:
        captions = list(captions)
        if len(captions) != n:
            name = "labels" if labels is not None else "titles"
            raise ValueError(f"show_images: expected {n} {name} (one per image), got {len(captions)}")
    extra = 0.25 if captions is not None else 0.0
    fig, axes = _grid(n, ncols, (1.0, 1.0 + extra), figsize)
    for i, ax in enumerate(axes):
        if rgb:
            ax.imshow(_as_rgb_unit(images[i]))
        else:
            ax.imshow(images[i], cmap=cmap)
        if captions is not None:
            ax.set_title(str(captions[i]), fontsize=8)
    fig.tight_layout()
    return fig


def show_filters(W, ncols=None, title=None):
    """Show convolution filters, one small panel per filter.

    W: (F, C, KH, KW) weights.
      C == 1: each filter in the diverging colormap "RdBu_r", centred at 0
        (white) with one symmetric scale for all filters, so red is positive,
        blue negative and panels are comparable.
      C == 3: each filter as an RGB image after min-max scaling that filter
        to [0, 1] (as usual for first-layer filters on colour images).
      other C: channel 0 of each filter, as for C == 1; the figure title says so.
    ncols: panels per row; default up to 10 in one row, else about square.
    title: figure title (suptitle).

    Returns the Figure, with one Axes per filter.
    """
    W = np.asarray(W)
    if W.ndim != 4:
        raise ValueError(f"show_filters: expected weights of shape (F, C, KH, KW), got {W.shape}")
    F, C = W.shape[:2]
    _check_count(F, "show_filters")
    if ncols is None:
        ncols = F if F <= 10 else math.ceil(math.sqrt(F))
    note = None
    if C == 3:
        panels = [_as_rgb_unit_minmax(w.transpose(1, 2, 0)) for w in W]
    else:
        panels = list(W[:, 0].astype(np.float64))
        if C != 1:
            note = f"channel 0 of {C}"
    fig, axes = _grid(F, ncols, (0.9, 0.95), None, extra_height=0.4 if (title or note) else 0.0)
    vmax = float(np.abs(W[:, 0]).max()) if C != 3 else None
    vmax = vmax or 1.0  # all-zero weights: any symmetric range
    for f, ax in enumerate(axes):
        if C == 3:
            ax.imshow(panels[f])
        else:
            ax.imshow(panels[f], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(str(f), fontsize=7)
    heading = ", ".join(t for t in (title, note) if t)
    if heading:
        fig.suptitle(heading)
    fig.tight_layout()
    return fig


def _as_rgb_unit_minmax(img):
    lo, hi = img.min(), img.max()
    return (img - lo) / (hi - lo) if hi > lo else np.full(img.shape, 0.5)


def plot_history(history):
    """Training curves: loss (left) and accuracy (right) against the epoch.

    history: dict of lists with per-epoch values
        "loss", "acc"            training loss and accuracy (required, equal length E)
        "val_loss", "val_acc"    validation values (optional, length E)
        "batch_loss"             loss of every training step (optional, any length),
                                 drawn faintly at fractional epochs i * E / len
    Epoch values are drawn at x = 1 .. E (the end of each epoch).

    Returns the Figure with two Axes.
    """
    for key in ("loss", "acc"):
        if key not in history:
            raise ValueError(f"plot_history: expected keys 'loss' and 'acc', got {sorted(history)}")
    epochs_n = len(history["loss"])
    for key in ("acc", "val_loss", "val_acc"):
        if key in history and len(history[key]) != epochs_n:
            raise ValueError(f"plot_history: expected {epochs_n} values of {key!r} "
                             f"(as for 'loss'), got {len(history[key])}")
    epochs = np.arange(1, epochs_n + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    batch = history.get("batch_loss")
    if batch is not None and len(batch) > 0:
        steps = np.arange(1, len(batch) + 1) * (max(epochs_n, 1) / len(batch))
        ax_loss.plot(steps, batch, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
    for ax, key, name in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, history[key], "o-", color="tab:blue", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "o-", color="tab:orange", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    fig.tight_layout()
    return fig


def _labels(y, name, n_classes):
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"confusion_matrix: expected {name} of shape (N,), got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
            raise ValueError(f"confusion_matrix: expected integer class ids in {name}, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)][0]
        raise ValueError(f"confusion_matrix: expected {name} in 0 .. {n_classes - 1}, got {bad}")
    return y.astype(np.int64)


def confusion_matrix(y_true, y_pred, n_classes):
    """Counts of (true, predicted) pairs.

    y_true, y_pred: (N,) integer class ids in 0 .. n_classes - 1.
    Returns an (n_classes, n_classes) int64 array M with M[i, j] = the number
    of samples of class i predicted as j: rows true, columns predicted; the
    diagonal holds the correct predictions.
    """
    n_classes = int(n_classes)
    if n_classes < 1:
        raise ValueError(f"confusion_matrix: expected n_classes >= 1, got {n_classes}")
    t = _labels(y_true, "y_true", n_classes)
    p = _labels(y_pred, "y_pred", n_classes)
    if t.shape != p.shape:
        raise ValueError(f"confusion_matrix: expected y_pred of shape {t.shape} (as y_true), got {p.shape}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def plot_confusion_matrix(y_true, y_pred, class_names):
    """The confusion matrix as an image, with the count written in each cell.

    y_true, y_pred: (N,) integer class ids; class_names: one name per class
    (its length is the number of classes). Rows: true class ("true"),
    columns: predicted class ("predicted").

    Returns the Figure with one Axes.
    """
    class_names = [str(c) for c in class_names]
    k = len(class_names)
    M = confusion_matrix(y_true, y_pred, k)
    size = max(3.0, 0.45 * k + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(M, cmap="Blues")
    threshold = M.max() / 2 if M.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(M[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if M[i, j] > threshold else "black")
    ax.set_xticks(range(k))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticks(range(k))
    ax.set_yticklabels(class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    return fig


def plot_curves(xs, ys_dict, xlabel, ylabel, title=None, logy=False):
    """Several named curves over the same x values on one Axes, with a legend.

    xs: (n,) x values; ys_dict: {name: (n,) y values}; logy: log-scale y axis
    (e.g. for run times or relative errors).

    Returns the Figure with one Axes.
    """
    xs = np.asarray(xs)
    if xs.ndim != 1:
        raise ValueError(f"plot_curves: expected xs of shape (n,), got {xs.shape}")
    if not ys_dict:
        raise ValueError("plot_curves: expected at least one curve in ys_dict, got none")
    curves = {name: np.asarray(ys) for name, ys in ys_dict.items()}
    for name, ys in curves.items():
        if ys.shape != xs.shape:
            raise ValueError(f"plot_curves: expected {name!r} of shape {xs.shape} (as xs), got {ys.shape}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in curves.items():
        ax.plot(xs, ys, "o-", label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
