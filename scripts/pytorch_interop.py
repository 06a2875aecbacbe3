#!/usr/bin/env python3
"""A model trained in PyTorch, run by Tessera both ways (docs/import.md).

Trains a torchvision-named CIFAR-style ResNet-18 (width 0.25, 1 input channel) on Fashion-MNIST
in PyTorch, saves it as TorchScript (torch.jit.script) and as a torchvision-named safetensors
state dict, then checks with the tessera binary:
  - `tessera eval` gives PyTorch's test accuracy (to 0.01 points) and logits (within 1e-5) on
    the TorchScript file and on the state dict imported with `tessera models import`;
  - `tessera reram map`, `tessera fpga latency` and `tessera bitflip attack` print the same
    figures on the TorchScript file as on the imported Tessera file.
Exits 0 when every check holds, 1 otherwise, and 77 (skipped) when PyTorch is not installed.
"""
import argparse
import gzip
import json
import os
import struct
import subprocess
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
except ImportError:
    # Debian's python3-torch lives in the system interpreter; another python3 may come first.
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and \
            os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("pytorch_interop: PyTorch is not installed (Debian: python3-torch); skipped")
    sys.exit(77)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(directory, split):
    """Images [N, 1, 32, 32] in [0, 1], zero-padded from 28 as Tessera pads them, and labels."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(directory, prefix + "-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(directory, prefix + "-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = nn.functional.pad(x, (2, 2, 2, 2))
    return x, torch.from_numpy(labels.astype(np.int64))


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 names, CIFAR stem (3x3 conv, no max-pool): Tessera's resnet18."""

    def __init__(self, in_channels=1, num_classes=10, widths=(16, 32, 64, 128)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, "layer%d" % (i + 1),
                    nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


DTYPES = {torch.float32: ("F32", np.float32), torch.int64: ("I64", np.int64)}


def save_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        code, np_type = DTYPES[t.dtype]
        blob = t.detach().contiguous().numpy().astype(np_type).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    types = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + begin:8 + n + end],
                                  dtype=types[info["dtype"]]).reshape(info["shape"])
    return out


def train(model, data, steps, seed):
    x, y = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0:
            print("  step %d/%d loss %.4f" % (step + 1, steps, loss.item()), flush=True)


def tessera(binary, *args, allowed=(0,)):
    cmd = [binary] + [str(a) for a in args]
    print("$ " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in allowed:
        sys.exit("command failed (%d):\n%s%s" % (done.returncode, done.stdout, done.stderr))
    return done.stdout


def figures(report, keys):
    with open(report) as f:
        results = json.load(f)["results"]
    return {k: results[k] for k in keys}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tessera", default="build/tessera", help="the tessera binary")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default="tessera-out/interop", help="directory for the files")
    parser.add_argument("--steps", type=int, default=300, help="PyTorch training steps")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(a.seed)
    torch.set_num_threads(2)

    print("training a torchvision-named ResNet-18 (width 0.25) in PyTorch %s for %d steps"
          % (torch.__version__, a.steps), flush=True)
    model = ResNet18()
    train(model, fashion_mnist(a.data, "train"), a.steps, a.seed)
    model.eval()
    x_test, y_test = fashion_mnist(a.data, "test")
    with torch.no_grad():
        logits = torch.cat([model(x_test[i:i + 500]) for i in range(0, len(x_test), 500)])
    accuracy = (logits.argmax(1) == y_test).double().mean().item()
    print("PyTorch: test accuracy %.4f%% on %d images" % (100 * accuracy, len(y_test)))

    script = os.path.join(a.out, "resnet18.pt")
    state = os.path.join(a.out, "resnet18-torchvision.safetensors")
    imported = os.path.join(a.out, "resnet18-tessera.safetensors")
    torch.jit.script(model).save(script)
    save_safetensors(state, model.state_dict())
    tessera(a.tessera, "models", "import", state, "-o", imported, "--arch", "resnet18",
            "--width-mult", 0.25, "--in-channels", 1, "--num-classes", 10)

    failures = []
    for name, path in (("TorchScript", script), ("torchvision names", imported)):
        report = os.path.join(a.out, "eval-%s.json" % os.path.basename(path))
        logits_path = os.path.join(a.out, "logits-%s.safetensors" % os.path.basename(path))
        tessera(a.tessera, "eval", "--model", path, "--data", a.data, "--json", report,
                "--logits", logits_path)
        ours = figures(report, ["accuracy"])["accuracy"]
        diff = float(np.abs(load_safetensors(logits_path)["logits"] - logits.numpy()).max())
        ok = abs(ours - accuracy) * 100 <= 0.01 and diff <= 1e-5
        print("%-18s tessera eval %.4f%% (PyTorch %.4f%%), max |logit diff| %.2e: %s"
              % (name, 100 * ours, 100 * accuracy, diff, "ok" if ok else "MISMATCH"))
        if not ok:
            failures.append(name + " eval")

    checks = [
        ("reram map", ["reram", "map"]),
        ("fpga latency", ["fpga", "latency", "--repeats", 3]),
        ("bitflip attack", ["bitflip", "attack", "--flips", 3, "--eval-size", 500,
                            "--data", a.data]),
    ]
    for label, args in checks:
        got = []
        for path in (script, imported):
            report = os.path.join(a.out, "%s-%s.json" % (args[0], os.path.basename(path)))
            extra = ["-o", ""] if args[0] == "reram" else []
            tessera(a.tessera, *args, "--model", path, "--json", report, *extra)
            with open(report) as f:
                got.append(strip_names(json.load(f)["results"]))
        ok = got[0] == got[1]
        print("%-18s TorchScript and Tessera-format figures %s" % (label,
                                                                   "equal" if ok else "DIFFER"))
        if not ok:
            print("  TorchScript:", json.dumps(got[0])[:600])
            print("  Tessera:    ", json.dumps(got[1])[:600])
            failures.append(label)

    # RADAR: signatures of the clean model, a PBFA attack written back, and the verification.
    got = []
    for path in (script, imported):
        base = os.path.basename(path)
        signatures = os.path.join(a.out, base + ".radar")
        attacked = os.path.join(a.out, "attacked-" + base)
        key = ["--secret-seed", 7]
        tessera(a.tessera, "bitflip", "protect", "--model", path, "-o", signatures, *key)
        tessera(a.tessera, "bitflip", "attack", "--model", path, "--flips", 3, "--eval-size", 500,
                "--data", a.data, "-o", attacked)
        report = os.path.join(a.out, "verify-%s.json" % base)
        tessera(a.tessera, "bitflip", "verify", "--model", attacked, "--signatures", signatures,
                "--json", report, *key, allowed=(0, 3))
        with open(report) as f:
            got.append(strip_names(json.load(f)["results"]))
    ok = got[0] == got[1]
    print("%-18s TorchScript and Tessera-format figures %s" % ("RADAR verify",
                                                               "equal" if ok else "DIFFER"))
    if not ok:
        print("  TorchScript:", json.dumps(got[0])[:600])
        print("  Tessera:    ", json.dumps(got[1])[:600])
        failures.append("RADAR verify")

    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    print("all interop checks hold")
    return 0


# Keys that differ by design: names (script.layer1.0.conv1 vs block1.conv1.conv, the file) and
# wall-clock timings.
IGNORED = {"name", "layer", "model", "network", "names", "path",
           "map s", "quantize_seconds", "map_cpu_time", "map_time", "us_per_evaluation", "us_min"}


def strip_names(value):
    """The value without the IGNORED keys, at every depth. RADAR's secret group interleaving is
    keyed by the layer name, so which groups a flip lands in differs between the two names of one
    layer: lists of flagged groups are compared by their length."""
    if isinstance(value, dict):
        return {k: len(v) if k == "flagged_groups" and isinstance(v, list) else strip_names(v)
                for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [strip_names(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
