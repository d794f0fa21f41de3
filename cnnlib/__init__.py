"""cnnlib: the small library the notebook series builds, one module per idea.

datasets    Fashion-MNIST and MNIST loaders (offline, checksum-verified)
functional  convolution and pooling: naive loops, classic im2col, fast path
layers      Conv2D, MaxPool2D, ReLU, Dense, ... with forward/backward
losses      SoftmaxCrossEntropy, BinaryCrossEntropy
optim       SGD, Momentum, Adam
nets        Sequential, SimpleConvNet
train       mini-batch training loop, batched predict/evaluate
gradcheck   numerical gradients and relative errors
viz         image grids, filters, training curves, confusion matrices
io          save/load weights (no pickle)
"""
__version__ = "0.1.0"
