"""Batched, differentiable patch crops at (x, y, support, orientation), shared by LF-Net and LIFT.

Why one module: both methods describe *oriented, scaled* patches, and training (LF-Net's
two-branch scheme) needs gradients w.r.t. keypoint position, scale and orientation. A single
``grid_sample`` call per batch does every keypoint at once on the image's device (no per-keypoint
Python loop, no host round trip).

Sampling convention (the one thing to get right; the tests check it against ``cv2.warpAffine``):

- Image pixels: the centre of the top-left pixel is ``(0, 0)`` (project convention); samples are
  bilinear and positions outside the image are clamped to the border pixels (like TF's
  ``transformer_crop`` which clips coordinates, and like ``cv2.BORDER_REPLICATE``).
- Patch pixel ``(u, v)`` (``u`` = column, ``v`` = row, ``0..P-1``) has a normalised offset
  ``o = (g(u), g(v))`` in ``[-1, 1]``:

  * ``corners=True`` (TF spatial-transformer / LF-Net): ``g(u) = -1 + 2u/(P-1)``, i.e.
    ``linspace(-1, 1, P)``; the outermost patch pixels sit *on* the support border.
  * ``corners=False`` (pixel areas, used for LIFT): ``g(u) = (2u + 1)/P - 1``; the patch pixels
    tile the support square, so with ``half_width = P/2`` the crop is a pure translation.

- It samples the image at ``p = c + half_width * R(theta) @ o`` with
  ``R(theta) = [[cos, -sin], [sin, cos]]`` in image axes (x right, y *down*). A positive angle is
  therefore clockwise on screen, and ``theta`` is the direction of the patch's +u axis in the
  image: ``atan2(dy, dx)``. Cropping a rotated image at the rotated angle gives the same patch.

Equivalent ``cv2.warpAffine(img, M, (P, P), flags=INTER_LINEAR | WARP_INVERSE_MAP,
borderMode=BORDER_REPLICATE)`` matrix: see :func:`affine_matrix`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def patch_offsets(patch_size: int, corners: bool, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D offsets ``g(u)`` in ``[-1, 1]`` for ``u = 0..P-1`` (see module docstring)."""
    p = int(patch_size)
    if corners:
        if p == 1:
            return torch.zeros(1, device=device, dtype=dtype)
        return torch.linspace(-1.0, 1.0, p, device=device, dtype=dtype)
    return (2.0 * torch.arange(p, device=device, dtype=dtype) + 1.0) / p - 1.0


def sampling_grid(centers: torch.Tensor, half_widths: torch.Tensor, oris: torch.Tensor | None,
                  patch_size: int, corners: bool = True) -> torch.Tensor:
    """Image-pixel sample positions ``(B, N, P, P, 2)`` [x, y] for every patch pixel.

    Args:
        centers: ``(B, N, 2)`` keypoint [x, y] in image pixels.
        half_widths: ``(B, N)`` half of the patch support in image pixels.
        oris: ``(B, N)`` radians or ``None`` (upright).
    """
    g = patch_offsets(patch_size, corners, centers.device, centers.dtype)
    gy, gx = torch.meshgrid(g, g, indexing="ij")  # (P, P): row v -> gy, column u -> gx
    if oris is None:
        cos = torch.ones_like(half_widths)
        sin = torch.zeros_like(half_widths)
    else:
        cos, sin = torch.cos(oris), torch.sin(oris)
    a = (half_widths * cos)[..., None, None]
    b = (half_widths * sin)[..., None, None]
    x = centers[..., 0, None, None] + a * gx - b * gy
    y = centers[..., 1, None, None] + b * gx + a * gy
    return torch.stack([x, y], dim=-1)


def sample_image(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``image (B, C, H, W)`` at pixel positions ``points (B, ..., 2)``.

    Returns ``(B, C, ...)``. Positions outside are clamped to the border pixels.
    """
    b, _, h, w = image.shape
    shape = points.shape[1:-1]
    pts = points.reshape(b, -1, 1, 2)
    # align_corners=True: pixel centre i <-> -1 + 2i/(size-1); keeps the (0, 0) = centre convention.
    sx = 2.0 / max(w - 1, 1)
    sy = 2.0 / max(h - 1, 1)
    grid = torch.stack([pts[..., 0] * sx - 1.0, pts[..., 1] * sy - 1.0], dim=-1)
    # Sample in fp32 under reduced precision: a bf16 grid is off by ~W/256 px.
    work = torch.float32 if image.dtype in (torch.float16, torch.bfloat16) else image.dtype
    out = F.grid_sample(image.to(work), grid.to(work), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out.to(image.dtype).reshape(b, image.shape[1], *shape)


def extract_patches(image: torch.Tensor, centers: torch.Tensor, half_widths: torch.Tensor,
                    oris: torch.Tensor | None = None, patch_size: int = 32,
                    corners: bool = True) -> torch.Tensor:
    """Oriented, scaled square patches, differentiable w.r.t. every input.

    Args:
        image: ``(B, C, H, W)``.
        centers: ``(B, N, 2)`` [x, y] pixels.
        half_widths: ``(B, N)`` half support in pixels (LF-Net: ``16 * scale``; LIFT: ``6 * sigma``).
        oris: ``(B, N)`` radians, or ``None``.
        patch_size: ``P``.
        corners: offset convention (module docstring).

    Returns:
        ``(B, N, C, P, P)`` patches.
    """
    if centers.ndim != 3 or centers.shape[-1] != 2:
        raise ValueError(f"centers must be (B, N, 2), got {tuple(centers.shape)}")
    bsz, n = centers.shape[:2]
    if n == 0:
        return image.new_zeros(bsz, 0, image.shape[1], patch_size, patch_size)
    grid = sampling_grid(centers, half_widths, oris, patch_size, corners)  # (B, N, P, P, 2)
    out = sample_image(image, grid)  # (B, C, N, P, P)
    return out.permute(0, 2, 1, 3, 4)


def crop_patches_fast(image: torch.Tensor, centers: torch.Tensor, half_widths: torch.Tensor,
                      oris: torch.Tensor | None, patch_size: int, corners: bool) -> torch.Tensor:
    """``extract_patches`` with the same numbers, for inference (LF-Net and LIFT crops).

    Why: ``extract_patches`` builds its sampling grid with ~15 full-size ``(B, N, P, P)``
    element-wise ops and two stacks; but ``c + a g(u) - b g(v)`` is a per-column term minus a
    per-row term, so the same float operations, in the same order, can run on ``(B, N, P)``
    tables and only the final subtraction/addition and the normalisation touch the full grid,
    written in place into one buffer. One ``grid_sample`` then reads it, as before. Falls back to
    ``extract_patches`` when gradients are needed (``out=`` and in-place ops are not
    differentiable).
    """
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (image, centers, half_widths, oris)):
        return extract_patches(image, centers, half_widths, oris, patch_size, corners)
    if centers.ndim != 3 or centers.shape[-1] != 2:
        raise ValueError(f"centers must be (B, N, 2), got {tuple(centers.shape)}")
    bsz, n = centers.shape[:2]
    p = int(patch_size)
    if n == 0:
        return image.new_zeros(bsz, 0, image.shape[1], p, p)
    g = patch_offsets(p, corners, centers.device, centers.dtype)
    if oris is None:
        cos, sin = torch.ones_like(half_widths), torch.zeros_like(half_widths)
    else:
        cos, sin = torch.cos(oris), torch.sin(oris)
    a = (half_widths * cos)[..., None]
    b = (half_widths * sin)[..., None]
    # x[v, u] = (cx + a g(u)) - b g(v);  y[v, u] = (cy + b g(u)) + a g(v)  (extract_patches' order)
    xu, xv = centers[..., 0, None] + a * g, b * g
    yu, yv = centers[..., 1, None] + b * g, a * g
    h, w = image.shape[-2:]
    grid = torch.empty(bsz, n, p, p, 2, device=centers.device, dtype=centers.dtype)
    gx, gy = grid[..., 0], grid[..., 1]
    torch.sub(xu[:, :, None, :], xv[:, :, :, None], out=gx)
    torch.add(yu[:, :, None, :], yv[:, :, :, None], out=gy)
    gx.mul_(2.0 / max(w - 1, 1)).sub_(1.0)  # sample_image's align_corners=True normalisation
    gy.mul_(2.0 / max(h - 1, 1)).sub_(1.0)
    work = torch.float32 if image.dtype in (torch.float16, torch.bfloat16) else image.dtype
    out = F.grid_sample(image.to(work), grid.view(bsz, n * p * p, 1, 2).to(work), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.to(image.dtype).view(bsz, image.shape[1], n, p, p).permute(0, 2, 1, 3, 4)


def affine_matrix(center: tuple[float, float], half_width: float, ori: float, patch_size: int,
                  corners: bool = True) -> np.ndarray:
    """The 2x3 ``M`` with ``image_point = M @ [u, v, 1]`` (``cv2.WARP_INVERSE_MAP`` form).

    Why: lets a reader (and the tests) reproduce any crop with OpenCV and pins down the convention.
    """
    p = int(patch_size)
    if corners:
        step = 2.0 / (p - 1) if p > 1 else 0.0
        off = -1.0
    else:
        step = 2.0 / p
        off = 1.0 / p - 1.0
    c, s = math.cos(ori), math.sin(ori)
    a, b = half_width * c, half_width * s
    # g(u) = off + step*u;  x = cx + a g(u) - b g(v);  y = cy + b g(u) + a g(v)
    return np.array([
        [a * step, -b * step, center[0] + (a - b) * off],
        [b * step, a * step, center[1] + (a + b) * off],
    ], dtype=np.float64)
