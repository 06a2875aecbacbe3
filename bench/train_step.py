#!/usr/bin/python3
"""Training-step throughput of the same models in PyTorch's Python front end (Debian's
python3-torch, the same LibTorch 1.13 underneath). Mirrors bench/train_step.cpp: the layer
structure of tessera's vgg11_bn and resnet20 (1x32x32 input, 10 classes) is rebuilt here, and the
parameter count is printed so compare_train_throughput.sh can check the two models agree.
Usage: train_step.py MODEL BATCH STEPS THREADS   (prints one JSON line)"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBnAct(nn.Module):
    def __init__(self, cin, cout, k=3, stride=1, bias=False, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.act else x


def vgg11_bn(cin=1, classes=10):
    layers, c = [], cin
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers.append(ConvBnAct(c, v, bias=True))
            c = v
    layers += [nn.Flatten(), nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.5),
               nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


class BasicBlockA(nn.Module):
    """CIFAR ResNet block with the parameter-free option-A shortcut (subsample, zero channels)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = ConvBnAct(cin, cout, 3, stride)
        self.conv2 = ConvBnAct(cout, cout, 3, 1, act=False)
        self.stride, self.missing = stride, cout - cin

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        identity = x
        if self.stride != 1:
            identity = F.avg_pool2d(identity, 1, self.stride)
        if self.missing > 0:
            zeros = identity.new_zeros(identity.shape[0], self.missing, *identity.shape[2:])
            identity = torch.cat([identity, zeros], 1)
        return F.relu(out + identity)


def resnet20(cin=1, classes=10):
    layers, c = [ConvBnAct(cin, 16)], 16
    for stage, cout in enumerate([16, 32, 64]):
        for b in range(3):
            layers.append(BasicBlockA(c, cout, 2 if stage > 0 and b == 0 else 1))
            c = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*layers)


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet20"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = {"vgg11_bn": vgg11_bn, "resnet20": resnet20}[name]()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.rand(batch, 1, 32, 32)
    labels = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        opt.step()

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    print(json.dumps({"frontend": "python", "model": name, "batch": batch, "steps": steps,
                      "threads": torch.get_num_threads(),
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "images_per_second": round(batch * steps / seconds, 2)}))


if __name__ == "__main__":
    main()
