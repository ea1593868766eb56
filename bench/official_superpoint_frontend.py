"""A faithful re-statement of MagicLeap's ``SuperPointFrontend`` (docs/method_facts/superpoint.md)
for timing.

Why a separate file: the benchmark compares the package's extractor against the official
pipeline as the demo runs it (contiguous fp32 network, numpy post-processing with the greedy
``nms_fast`` loop), so this file must not share code with ``local_features_ros``. The tests keep
their own copy for parity checks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LAYERS = [  # (name, out, in, kernel), docs/method_facts/superpoint.md#network
    ("conv1a", 64, 1, 3), ("conv1b", 64, 64, 3), ("conv2a", 64, 64, 3), ("conv2b", 64, 64, 3),
    ("conv3a", 128, 64, 3), ("conv3b", 128, 128, 3), ("conv4a", 128, 128, 3),
    ("conv4b", 128, 128, 3), ("convPa", 256, 128, 3), ("convPb", 65, 256, 1),
    ("convDa", 256, 128, 3), ("convDb", 256, 256, 1),
]


def random_official_state_dict(seed: int = 0, logit_std: float = 4.0, dustbin_bias: float = 8.0
                               ) -> dict[str, torch.Tensor]:
    """He-normal weights in the official layout, detector head scaled to give a peaky heatmap."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, cout, cin, k in LAYERS:
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
        sd[f"{name}.bias"] = torch.zeros(cout)
    sd["convPb.weight"] *= logit_std
    sd["convPb.bias"][64] = dustbin_bias
    return sd


class OfficialSuperPointNet(nn.Module):
    """The official architecture: VGG-style encoder, no BatchNorm, inplace ReLUs."""

    def __init__(self) -> None:
        super().__init__()
        for name, cout, cin, k in LAYERS:
            setattr(self, name, nn.Conv2d(cin, cout, k, stride=1, padding=k // 2))
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.relu(self.conv1a(x))
        x = self.pool(self.relu(self.conv1b(x)))
        x = self.relu(self.conv2a(x))
        x = self.pool(self.relu(self.conv2b(x)))
        x = self.relu(self.conv3a(x))
        x = self.pool(self.relu(self.conv3b(x)))
        x = self.relu(self.conv4a(x))
        x = self.relu(self.conv4b(x))
        semi = self.convPb(self.relu(self.convPa(x)))
        desc = self.convDb(self.relu(self.convDa(x)))
        desc = desc.div(torch.unsqueeze(torch.norm(desc, p=2, dim=1), 1))
        return semi, desc


def nms_fast(corners: np.ndarray, h: int, w: int, dist: int) -> np.ndarray:
    """Greedy grid NMS, (3, N) [x, y, conf] -> kept (3, K) sorted by confidence."""
    if corners.shape[1] == 0:
        return np.zeros((3, 0))
    if corners.shape[1] == 1:
        return corners
    grid = np.zeros((h, w), dtype=int)
    where = np.zeros((h, w), dtype=int)
    order = np.argsort(-corners[2])
    cs = corners[:, order]
    xy = cs[:2].round().astype(int)
    for i, (x, y) in enumerate(xy.T):  # per-point loops, as the official code (timing fidelity)
        grid[y, x] = 1
        where[y, x] = i
    grid = np.pad(grid, ((dist, dist), (dist, dist)), mode="constant")
    for x, y in xy.T:
        x, y = x + dist, y + dist
        if grid[y, x] == 1:
            grid[y - dist:y + dist + 1, x - dist:x + dist + 1] = 0
            grid[y, x] = -1
    ky, kx = np.where(grid == -1)
    kept = cs[:, where[ky - dist, kx - dist]]
    return kept[:, np.argsort(-kept[2])]


class OfficialFrontend:
    """``SuperPointFrontend.run``: float32 (H, W) image in [0, 1] -> pts (3, N), desc (256, N)."""

    def __init__(self, state_dict: dict[str, torch.Tensor], conf_thresh: float = 0.015,
                 nms_dist: int = 4, border: int = 4) -> None:
        self.net = OfficialSuperPointNet()
        self.net.load_state_dict(state_dict)
        self.net.eval()
        self.conf_thresh, self.nms_dist, self.border = conf_thresh, nms_dist, border

    def run(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = img.shape
        with torch.no_grad():
            semi, coarse = self.net(torch.from_numpy(img.astype(np.float32))[None, None])
        s = semi.numpy().squeeze(0)
        dense = np.exp(s) / (np.sum(np.exp(s), axis=0) + 0.00001)
        nodust = dense[:-1].transpose(1, 2, 0)
        hc, wc = h // 8, w // 8
        heat = nodust.reshape(hc, wc, 8, 8).transpose(0, 2, 1, 3).reshape(hc * 8, wc * 8)
        ys, xs = np.where(heat >= self.conf_thresh)
        pts = np.stack([xs, ys, heat[ys, xs]]).astype(float) if len(xs) else np.zeros((3, 0))
        pts = nms_fast(pts, h, w, self.nms_dist)
        b = self.border
        bad = (pts[0] < b) | (pts[0] >= w - b) | (pts[1] < b) | (pts[1] >= h - b)
        pts = pts[:, ~bad]
        if pts.shape[1] == 0:
            return pts, np.zeros((256, 0)), heat
        samp = torch.from_numpy(pts[:2].copy()).float()
        samp[0] = samp[0] / (float(w) / 2.0) - 1.0
        samp[1] = samp[1] / (float(h) / 2.0) - 1.0
        grid = samp.t().contiguous().view(1, 1, -1, 2)
        desc = F.grid_sample(coarse, grid, align_corners=False).numpy().reshape(256, -1)
        desc /= np.linalg.norm(desc, axis=0)[None, :]
        return pts, desc, heat
