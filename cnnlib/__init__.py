"""cnnlib: the small library the notebook series builds, one module per idea.

datasets    Fashion-MNIST and MNIST loaders (offline, checksum-verified)
functional  convolution and pooling as the notebooks teach them: naive loops, im2col
layers      Conv2D, MaxPool2D, ReLU, Dense, ... with forward/backward (textbook bodies)
fast        the fast path: fast tiers, the fused conv -> ReLU -> pool layer (notebook 10)
parallel    ParallelStep, ProcessStep: one training step, the batch split over threads or processes
losses      SoftmaxCrossEntropy, BinaryCrossEntropy
optim       SGD, Momentum, Adam
nets        Sequential, SimpleConvNet (fast=True fuses conv -> ReLU -> pool)
train       mini-batch training loop, batched predict/evaluate
gradcheck   numerical gradients and relative errors
checks      self-checks for the exercises: run your function, read a verdict
viz         image grids, filters, training curves, confusion matrices
io          save/load weights (no pickle)
"""
__version__ = "0.1.0"
