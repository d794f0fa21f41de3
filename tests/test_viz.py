"""Tests for cnnlib.viz: figures, their axes and labels, confusion matrices, input errors."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cnnlib import viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


# ------------------------------------------------------------- show_images

@pytest.mark.parametrize("shape", [(12, 8, 8), (12, 1, 8, 8), (12, 8, 8, 3), (12, 3, 8, 8)])
def test_show_images_shapes(shape):
    rng = np.random.default_rng(0)
    fig = viz.show_images(rng.random(shape), ncols=5)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 12 and len(image_axes(fig)) == 12
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    assert len(rows) == 3  # 12 images in rows of 5
    for ax in fig.axes:
        assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
    rgb = len(shape) == 4 and 3 in (shape[1], shape[3])
    assert fig.axes[0].images[0].get_array().ndim == (3 if rgb else 2)


def test_show_images_labels_and_titles():
    x = np.zeros((3, 4, 4), dtype=np.uint8)
    fig = viz.show_images(x, labels=np.array([7, 1, 3]))
    assert [ax.get_title() for ax in fig.axes] == ["7", "1", "3"]
    fig = viz.show_images(x, titles=["a", "b", "c"])
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    fig = viz.show_images(x)
    assert [ax.get_title() for ax in fig.axes] == ["", "", ""]


def test_show_images_fewer_than_ncols_uses_one_row():
    fig = viz.show_images(np.zeros((3, 5, 5)), ncols=10)
    assert len(fig.axes) == 3
    assert len({round(ax.get_position().y0, 3) for ax in fig.axes}) == 1


def test_show_images_rgb_scaling():
    u8 = np.full((1, 2, 2, 3), 255, dtype=np.uint8)
    assert viz.show_images(u8).axes[0].images[0].get_array().max() == pytest.approx(1.0)
    standardised = np.linspace(-3, 3, 12).reshape(1, 2, 2, 3)
    arr = viz.show_images(standardised).axes[0].images[0].get_array()
    assert arr.min() == pytest.approx(0.0) and arr.max() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(8, 8), (2, 2, 8, 8), (2, 8, 8, 4), (1, 2, 3, 4, 5)])
def test_show_images_bad_shape(shape):
    with pytest.raises(ValueError, match=r"\(N, H, W\).*got \(" + ", ".join(map(str, shape))):
        viz.show_images(np.zeros(shape))


def test_show_images_bad_arguments():
    x = np.zeros((3, 4, 4))
    with pytest.raises(ValueError, match="expected 3 labels .* got 2"):
        viz.show_images(x, labels=[1, 2])
    with pytest.raises(ValueError, match="expected labels or titles, got both"):
        viz.show_images(x, labels=[1, 2, 3], titles=["a", "b", "c"])
    with pytest.raises(ValueError, match="expected at least one image, got 0"):
        viz.show_images(np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="expected at most 400 images, got 401"):
        viz.show_images(np.zeros((401, 2, 2)))
    assert plt.get_fignums() == []  # no half-made figure left open


# ------------------------------------------------------------ show_filters

def test_show_filters_single_channel_is_centred_diverging():
    W = np.linspace(-0.5, 2.0, 8 * 9).reshape(8, 1, 3, 3)
    fig = viz.show_filters(W, title="conv1")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 8
    assert fig._suptitle.get_text() == "conv1"
    for ax in fig.axes:
        im = ax.images[0]
        assert im.get_cmap().name == "RdBu_r"
        assert im.get_clim() == (-2.0, 2.0)  # symmetric around 0, one scale for all
        assert ax.get_xticks().size == 0


def test_show_filters_rgb_min_max_scaled():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(6, 3, 5, 5))
    fig = viz.show_filters(W)
    for ax, w in zip(fig.axes, W):
        arr = np.asarray(ax.images[0].get_array())
        assert arr.shape == (5, 5, 3)
        assert arr.min() == pytest.approx(0.0) and arr.max() == pytest.approx(1.0)
        expected = (w.transpose(1, 2, 0) - w.min()) / (w.max() - w.min())
        np.testing.assert_allclose(arr, expected)


def test_show_filters_many_channels_shows_channel_0_and_says_so():
    W = np.random.default_rng(2).normal(size=(30, 8, 3, 3))
    fig = viz.show_filters(W)
    assert len(fig.axes) == 30
    assert "channel 0 of 8" in fig._suptitle.get_text()
    np.testing.assert_allclose(fig.axes[4].images[0].get_array(), W[4, 0])
    assert len({round(ax.get_position().y0, 3) for ax in fig.axes}) == 5  # 30 filters: 6 per row


def test_show_filters_bad_shape():
    with pytest.raises(ValueError, match=r"expected weights of shape \(F, C, KH, KW\), got \(8, 3, 3\)"):
        viz.show_filters(np.zeros((8, 3, 3)))


# ------------------------------------------------------------ plot_history

def test_plot_history_train_only():
    fig = viz.plot_history({"loss": [1.0, 0.5, 0.3], "acc": [0.5, 0.8, 0.9]})
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_xlabel() == "epoch" and acc_ax.get_xlabel() == "epoch"
    assert loss_ax.get_ylabel() == "loss" and acc_ax.get_ylabel() == "accuracy"
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train"]
    np.testing.assert_array_equal(loss_ax.lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(acc_ax.lines[0].get_ydata(), [0.5, 0.8, 0.9])


def test_plot_history_with_validation_and_batches():
    history = {"loss": [1.0, 0.5], "acc": [0.5, 0.8], "val_loss": [1.1, 0.6], "val_acc": [0.4, 0.7],
               "batch_loss": [2.0, 1.5, 1.2, 1.0, 0.8, 0.6, 0.5, 0.4]}
    fig = viz.plot_history(history)
    loss_ax, acc_ax = fig.axes
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train (per step)", "train", "validation"]
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == ["train", "validation"]
    faint = loss_ax.lines[0]
    np.testing.assert_allclose(faint.get_xdata(), np.arange(1, 9) / 4)  # 4 steps per epoch
    assert faint.get_alpha() < 0.5


@pytest.mark.parametrize("history, message", [
    ({"loss": [1.0]}, "expected keys 'loss' and 'acc', got \\['loss'\\]"),
    ({"loss": [1.0, 0.5], "acc": [0.5]}, "expected 2 values of 'acc' .* got 1"),
    ({"loss": [1.0, 0.5], "acc": [0.5, 0.6], "val_loss": [1.0]}, "expected 2 values of 'val_loss' .* got 1"),
])
def test_plot_history_bad_input(history, message):
    with pytest.raises(ValueError, match=message):
        viz.plot_history(history)


# -------------------------------------------------------- confusion_matrix

def test_confusion_matrix_hand_built():
    y_true = [0, 0, 1, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 2, 2, 0, 2]
    expected = np.array([[1, 1, 0],
                         [0, 2, 1],
                         [1, 0, 3]])
    M = viz.confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(M, expected)
    assert M.dtype.kind == "i"


def test_confusion_matrix_extra_classes_and_empty():
    np.testing.assert_array_equal(viz.confusion_matrix([1], [3], 4)[1], [0, 0, 0, 1])
    np.testing.assert_array_equal(viz.confusion_matrix([], [], 2), np.zeros((2, 2)))
    np.testing.assert_array_equal(viz.confusion_matrix(np.array([1.0, 0.0]), np.array([1.0, 1.0]), 2),
                                  [[0, 1], [0, 1]])


@given(st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.just(k),
    st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), max_size=60))))
def test_confusion_matrix_matches_loops(case):
    k, pairs = case
    y_true = np.array([t for t, _ in pairs], dtype=np.int64)
    y_pred = np.array([p for _, p in pairs], dtype=np.int64)
    brute = np.zeros((k, k), dtype=np.int64)
    for i in range(k):
        for j in range(k):
            for t, p in pairs:
                if t == i and p == j:
                    brute[i, j] += 1
    M = viz.confusion_matrix(y_true, y_pred, k)
    np.testing.assert_array_equal(M, brute)
    assert M.sum() == len(pairs)


@pytest.mark.parametrize("y_true, y_pred, message", [
    ([0, 3], [0, 1], r"expected y_true in 0 \.\. 2, got 3"),
    ([0, 1], [0, -1], r"expected y_pred in 0 \.\. 2, got -1"),
    ([[0, 1]], [0, 1], r"expected y_true of shape \(N,\), got \(1, 2\)"),
    ([0, 1], [0, 1, 2], r"expected y_pred of shape \(2,\) \(as y_true\), got \(3,\)"),
    ([0.5, 1], [0, 1], "expected integer class ids in y_true, got dtype float64"),
])
def test_confusion_matrix_bad_input(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        viz.confusion_matrix(y_true, y_pred, 3)


def test_plot_confusion_matrix():
    names = ["trouser", "dress", "bag"]
    fig = viz.plot_confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], names)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells[(0, 0)] == "1" and cells[(0, 1)] == "1" and cells[(2, 0)] == "1" and cells[(1, 2)] == "0"
    assert len(cells) == 9


def test_plot_confusion_matrix_label_out_of_range():
    with pytest.raises(ValueError, match=r"expected y_pred in 0 \.\. 1, got 2"):
        viz.plot_confusion_matrix([0, 1], [0, 2], ["a", "b"])
    assert plt.get_fignums() == []


# ------------------------------------------------------------- plot_curves

def test_plot_curves():
    xs = [1, 2, 4, 8]
    fig = viz.plot_curves(xs, {"loops": [1.0, 2.0, 4.0, 8.0], "im2col": [0.1, 0.2, 0.3, 0.5]},
                          "batch size", "seconds", title="speed", logy=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("batch size", "seconds", "speed")
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loops", "im2col"]
    assert viz.plot_curves(xs, {"a": xs}, "x", "y").axes[0].get_yscale() == "linear"


def test_plot_curves_bad_input():
    with pytest.raises(ValueError, match=r"expected 'b' of shape \(3,\) \(as xs\), got \(2,\)"):
        viz.plot_curves([1, 2, 3], {"a": [1, 2, 3], "b": [1, 2]}, "x", "y")
    with pytest.raises(ValueError, match=r"expected xs of shape \(n,\), got \(1, 3\)"):
        viz.plot_curves([[1, 2, 3]], {"a": [1, 2, 3]}, "x", "y")
    assert plt.get_fignums() == []
