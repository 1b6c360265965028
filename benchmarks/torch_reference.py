"""The CycleGAN training step in PyTorch, as a yardstick for the Keras one.

The same architecture and losses as ``colab_utils`` with the paper's settings:
ResNet generators with 9 residual blocks and 64 filters, 70×70 PatchGAN
discriminators, instance normalisation without affine parameters, LSGAN,
cycle (λ 10) and identity (λ 5) L1 terms, Adam (2e-4, β1 0.5); one channel,
batch 1, two CPU threads (as the Keras step gets on this project's machine).
It prints the mean seconds per step after two warm-up steps. With ``bf16`` as the
third argument the forward passes run under CPU autocast to bfloat16 (the weights
and the optimizer stay float32, as Keras' ``mixed_bfloat16`` policy does).

Run it in its own environment (PyTorch is not a dependency of the project):

    python -m venv torch-venv && torch-venv/bin/pip install torch==2.13.0
    torch-venv/bin/python benchmarks/torch_reference.py 256 [steps] [fp32|bf16]

``infer SIZE SLICES BATCH fp32|bf16`` times inference instead: one ResNet-9 generator
in evaluation mode on SLICES random one-channel slices in batches of BATCH, as
``benchmarks/synthesize.py`` translates a volume (it prints the seconds).
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn


def instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False)


class Residual(nn.Module):
    """Two reflection-padded 3×3 convolutions and a skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), instance_norm(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), instance_norm(channels))

    def forward(self, x):
        return x + self.body(x)


def resnet_generator(filters: int = 64, blocks: int = 9) -> nn.Module:
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(1, filters, 7), instance_norm(filters),
              nn.ReLU(inplace=True)]
    width = filters
    for _ in range(2):  # downsampling
        layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                   instance_norm(2 * width), nn.ReLU(inplace=True)]
        width *= 2
    layers += [Residual(width) for _ in range(blocks)]
    for _ in range(2):  # upsampling
        layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1,
                                      output_padding=1),
                   instance_norm(width // 2), nn.ReLU(inplace=True)]
        width //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, 1, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def patchgan(filters: int = 64, n_layers: int = 3) -> nn.Module:
    layers = [nn.Conv2d(1, filters, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
    width = filters
    for i in range(1, n_layers + 1):
        out = filters * min(2 ** i, 8)
        stride = 2 if i < n_layers else 1
        layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1), instance_norm(out),
                   nn.LeakyReLU(0.2, inplace=True)]
        width = out
    layers.append(nn.Conv2d(width, 1, 4, padding=1))
    return nn.Sequential(*layers)


def infer(size: int, slices: int, batch: int, bf16: bool) -> None:
    torch.set_num_threads(2)
    generator = resnet_generator().eval()
    images = torch.rand(slices, 1, size, size) * 2 - 1
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        generator(images[:batch])  # warm-up: oneDNN picks its kernels
        started = time.perf_counter()
        outputs = [generator(images[i:i + batch]).float() for i in range(0, slices, batch)]
        seconds = time.perf_counter() - started
    assert sum(len(o) for o in outputs) == slices
    print(f"torch infer {size} px, {slices} slices, batch {batch}, "
          f"{'bf16' if bf16 else 'fp32'}: {seconds:.3f} s")


def main() -> None:
    if sys.argv[1:2] == ["infer"]:
        size, slices, batch = (int(v) for v in sys.argv[2:5])
        infer(size, slices, batch, sys.argv[5] == "bf16")
        return
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    bf16 = len(sys.argv) > 3 and sys.argv[3] == "bf16"
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    torch.set_num_threads(2)
    gen_t1_to_t2, gen_t2_to_t1 = resnet_generator(), resnet_generator()
    disc_t1, disc_t2 = patchgan(), patchgan()
    generators = list(gen_t1_to_t2.parameters()) + list(gen_t2_to_t1.parameters())
    discriminators = list(disc_t1.parameters()) + list(disc_t2.parameters())
    gen_optimizer = torch.optim.Adam(generators, lr=2e-4, betas=(0.5, 0.999))
    disc_optimizer = torch.optim.Adam(discriminators, lr=2e-4, betas=(0.5, 0.999))
    real_t1, real_t2 = torch.randn(1, 1, size, size), torch.randn(1, 1, size, size)

    def lsgan(scores, target: float):
        return torch.mean((scores - target) ** 2)

    def step():
        # Generators: adversarial + 10 cycle + 5 identity, discriminators frozen.
        for p in discriminators:
            p.requires_grad_(False)
        gen_optimizer.zero_grad()
        with autocast():
            fake_t2, fake_t1 = gen_t1_to_t2(real_t1), gen_t2_to_t1(real_t2)
            cycle = (torch.mean(torch.abs(gen_t2_to_t1(fake_t2).float() - real_t1))
                     + torch.mean(torch.abs(gen_t1_to_t2(fake_t1).float() - real_t2)))
            identity = (torch.mean(torch.abs(gen_t2_to_t1(real_t1).float() - real_t1))
                        + torch.mean(torch.abs(gen_t1_to_t2(real_t2).float() - real_t2)))
            loss = (lsgan(disc_t2(fake_t2).float(), 1.0) + lsgan(disc_t1(fake_t1).float(), 1.0)
                    + 10 * cycle + 5 * identity)
        loss.backward()
        gen_optimizer.step()
        # Discriminators: real against synthetic, halved.
        for p in discriminators:
            p.requires_grad_(True)
        disc_optimizer.zero_grad()
        with autocast():
            loss = 0.5 * sum(lsgan(d(x).float(), target) for d, x, target in (
                (disc_t2, real_t2, 1.0), (disc_t2, fake_t2.detach(), 0.0),
                (disc_t1, real_t1, 1.0), (disc_t1, fake_t1.detach(), 0.0)))
        loss.backward()
        disc_optimizer.step()

    step()
    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    print(f"torch size {size} {'bf16' if bf16 else 'fp32'}: {seconds:.3f} s/step, "
          f"{1 / seconds:.2f} img/s")


if __name__ == "__main__":
    main()
