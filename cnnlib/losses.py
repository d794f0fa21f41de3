"""Losses with forward/backward, numerically stable for any logits.

``forward`` returns the mean loss over the batch (a Python float) and caches
what ``backward`` needs; ``backward()`` returns dL/d(logits).
"""
import numpy as np
from scipy.special import expit

__all__ = ["softmax", "log_softmax", "SoftmaxCrossEntropy", "BinaryCrossEntropy"]


def log_softmax(z):
    """log(softmax(z)) along the last axis, without overflow: shifting the
    logits by their maximum leaves softmax unchanged and keeps exp(.) <= 1."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(z):
    """exp(z) / sum(exp(z)) along the last axis, stable for logits of +-1000."""
    return np.exp(log_softmax(z))


def _check_labels(labels, n, n_classes, name):
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{name}: expected labels of shape ({n},) to match the {n} "
                         f"predictions, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name}: expected integer class labels, got dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name}: labels must be in [0, {n_classes - 1}], "
                         f"got values from {labels.min()} to {labels.max()}")
    return labels


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, fused (their joint gradient is simple).

    forward(logits: (N, K) float, labels: (N,) int in [0, K)) -> mean loss;
    backward() -> dlogits: (N, K) = (softmax(logits) - onehot(labels)) / N.
    """

    def forward(self, logits, labels):
        if not isinstance(logits, np.ndarray) or logits.ndim != 2:
            raise ValueError("SoftmaxCrossEntropy: expected logits of shape (N, K), got "
                             f"{getattr(logits, 'shape', type(logits).__name__)}")
        if not np.issubdtype(logits.dtype, np.floating):
            raise TypeError(f"SoftmaxCrossEntropy: expected float logits, got dtype {logits.dtype}")
        self.labels = _check_labels(labels, len(logits), logits.shape[1], "SoftmaxCrossEntropy")
        logp = log_softmax(logits)
        self.probs = np.exp(logp)
        return float(-logp[np.arange(len(logits)), self.labels].mean())

    def backward(self):
        d = self.probs.copy()
        d[np.arange(len(d)), self.labels] -= 1
        return d / d.dtype.type(len(d))

    __call__ = forward


class BinaryCrossEntropy:
    """Sigmoid followed by log-loss, fused, for one logit per sample.

    forward(logits: (N,) or (N, 1), labels: (N,) of 0/1) -> mean loss;
    backward() -> dlogits, same shape as logits: (sigmoid(z) - y) / N.
    ``log(1 + exp(-z))`` is computed as ``logaddexp(0, -z)``, so logits of
    +-1000 give finite losses without warnings.
    """

    def forward(self, logits, labels):
        if not isinstance(logits, np.ndarray) or not np.issubdtype(logits.dtype, np.floating):
            raise TypeError("BinaryCrossEntropy: expected a float array of logits")
        if logits.ndim == 2 and logits.shape[1] != 1 or logits.ndim > 2:
            raise ValueError(f"BinaryCrossEntropy: expected logits of shape (N,) or (N, 1), got {logits.shape}")
        self.shape = logits.shape
        z = logits.reshape(-1)
        self.labels = _check_labels(labels, len(z), 2, "BinaryCrossEntropy").astype(z.dtype)
        self.p = expit(z)
        y = self.labels
        return float(np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)))

    def backward(self):
        return ((self.p - self.labels) / self.p.dtype.type(len(self.p))).reshape(self.shape)

    __call__ = forward
