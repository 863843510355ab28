"""The plain-PyTorch LatticeNet, written from DESIGN.md as the published code has it (pooling, std, 1x1-conv MLPs,
products, sums, cat), sharing no code with the fused modules and with the published state-dict keys. It is the
spec the library's models are tested against and the "eager PyTorch" / "torch.compile" baseline of the
benchmarks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainCC(nn.Module):
    def __init__(self, c, r=16):
        super().__init__()
        self.conv_mean = nn.Sequential(nn.Conv2d(c, c // r, 1), nn.ReLU(), nn.Conv2d(c // r, c, 1), nn.Sigmoid())
        self.conv_std = nn.Sequential(nn.Conv2d(c, c // r, 1), nn.ReLU(), nn.Conv2d(c // r, c, 1), nn.Sigmoid())

    def forward(self, x):
        mean = F.adaptive_avg_pool2d(x, 1)
        n, c = x.shape[:2]
        std = torch.std(x.view(n, c, -1), dim=2).view(n, c, 1, 1)
        return (self.conv_mean(mean) + self.conv_std(std)) / 2.0


def plain_rb(c, d):
    return nn.Sequential(nn.Conv2d(c, c - d, 3, padding=1), nn.LeakyReLU(0.05), nn.Conv2d(c - d, c - d, 3, padding=1),
                         nn.LeakyReLU(0.05), nn.Conv2d(c - d, c, 3, padding=1), nn.LeakyReLU(0.05))


class PlainLB(nn.Module):
    def __init__(self, c=64, d=16):
        super().__init__()
        self.conv_block0 = plain_rb(c, d)
        self.fea_ca1, self.x_ca1 = PlainCC(c), PlainCC(c)
        self.conv_block1 = plain_rb(c, d)
        self.fea_ca2, self.x_ca2 = PlainCC(c), PlainCC(c)
        self.compress = nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        f = self.conv_block0(x)
        p1 = x + self.fea_ca1(f) * f
        q1 = f + self.x_ca1(x) * x
        g = self.conv_block1(p1)
        p3 = g + self.fea_ca2(q1) * q1
        q3 = q1 + self.x_ca2(g) * g
        return self.compress(torch.cat((p3, q3), 1))


class PlainLatticeNet(nn.Module):
    def __init__(self, scale, c=64):
        super().__init__()
        self.sub_mean = nn.Conv2d(3, 3, 1)
        self.add_mean = nn.Conv2d(3, 3, 1)
        mean = torch.tensor([0.4488, 0.4371, 0.4040]) * 255
        with torch.no_grad():
            for m, sign in ((self.sub_mean, -1), (self.add_mean, 1)):
                m.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
                m.bias.copy_(sign * mean)
                m.requires_grad_(False)
        self.conv1 = nn.Conv2d(3, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.body_unit1, self.body_unit2, self.body_unit3, self.body_unit4 = (PlainLB(c) for _ in range(4))
        for i in (1, 2, 3):
            setattr(self, f"T_tdm{i}", nn.Sequential(nn.Conv2d(c, c // 2, 1), nn.ReLU()))
            setattr(self, f"L_tdm{i}", nn.Sequential(nn.Conv2d(c, c // 2, 1), nn.ReLU()))
        self.tail = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, 3 * scale * scale, 3, padding=1),
                                  nn.PixelShuffle(scale))

    def forward(self, x):
        x = self.conv2(self.conv1(self.sub_mean(x)))
        r1 = self.body_unit1(x)
        r2 = self.body_unit2(r1)
        r3 = self.body_unit3(r2)
        r4 = self.body_unit4(r3)
        t = torch.cat((self.T_tdm1(r4), self.L_tdm1(r3)), 1)
        t = torch.cat((self.T_tdm2(t), self.L_tdm2(r2)), 1)
        t = torch.cat((self.T_tdm3(t), self.L_tdm3(r1)), 1)
        return self.add_mean(self.tail(t + x))
