"""Point cloud -> geometric evidence maps on the RGB image grid.

Two paths:

* live, ORGANIZED cloud (H, W, 3): image-space normals (cross product of the grid tangents),
  curvature (local spread of the normals) and deviation from a smoothed surface, all in torch so
  they run on the GPU when one is present;
* offline, UNORGANIZED cloud (N, 3): open3d normals and curvature (eigenvalues of the local
  covariance), FPFH descriptors on request (about 1.5 s per 50k points: never on the live path),
  then projected onto the image grid through the pinhole model and finished with the organized
  path.

Every map is float32 (H, W); invalid pixels (NaN / inf / non-positive depth / nothing projected)
are 0 in the maps and False in ``valid``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.stats import median_abs_deviation

from .frame import CameraIntrinsics
from .medians import median


@dataclass
class GeometryMaps:
    """Geometric evidence on the image grid, all tensors on one device.

    depth:      (H, W) float32 metres (0 where invalid).
    normals:    (3, H, W) float32 unit normals, oriented towards the camera (0 where invalid).
    curvature:  (H, W) float32 >= 0, 1 - |mean of neighbouring normals| (0 on a plane).
    deviation:  (H, W) float32 metres, signed distance along the normal to the smoothed surface
                (positive towards the camera: bumps > 0, dents < 0).
    valid:      (H, W) bool.
    fpfh:       (33, H, W) float32 or None (offline path only).
    """

    depth: torch.Tensor
    normals: torch.Tensor
    curvature: torch.Tensor
    deviation: torch.Tensor
    valid: torch.Tensor
    fpfh: Optional[torch.Tensor] = None

    def as_image(self) -> torch.Tensor:
        """(3, H, W) float32 in [0, 1]: |deviation|, curvature and normal tilt, so the geometry
        can be read by an image backbone like a photo.

        Each channel is divided by a scale from the BULK of the part (a multiple of its median,
        with a physical floor) and compressed by tanh: a small defect does not change the scale,
        so the same surface reads the same whether or not a defect is present elsewhere."""
        v = self.valid
        if not bool(v.any()):
            return torch.zeros((3,) + tuple(v.shape), device=v.device)
        z_med = float(median(self.depth[v]))
        # Floors: 0.1 mm per metre of range for deviation; small fixed values for the others.
        dev = _bulk_unit(self.deviation.abs(), v, floor=2e-4 * max(z_med, 1e-3))
        curv = _bulk_unit(self.curvature, v, floor=2e-4)
        n = self.normals
        med = median(n[:, v], 1)
        med = med / med.norm().clamp_min(1e-6)
        # Tilt relative to the dominant orientation of the part (the median normal), so a
        # tilted-but-flat part reads as uniform.
        tilt = _bulk_unit(1.0 - (n * med[:, None, None]).sum(0).clamp(-1, 1), v, floor=2e-3)
        return torch.stack([dev, curv, tilt]) * v

    def height(self, sigma_px: float = 1.5) -> np.ndarray:
        """(H, W) float32 millimetres: how far each point stands out of the dominant plane of
        the view (the table a part lies on; the part's own face where it fills the view),
        towards the camera, measured along the viewing ray; smoothed by a Gaussian of
        `sigma_px` with invalid pixels filled from their valid neighbours (NaN where none is
        near). `deviation` is relative to the local surface, so a smooth bulge the size of its
        window hardly shows there; height keeps the part's shape, for comparing a part in
        register with its references point by point (core/aligned.py). `height_above_plane`
        of the maps' depth: `surface_depth` gives the same without the other maps."""
        return height_above_plane(self.depth.detach().float().cpu().numpy(),
                                  self.valid.detach().cpu().numpy(), sigma_px)


def height_above_plane(depth: np.ndarray, valid: np.ndarray, sigma_px: float = 1.5
                       ) -> np.ndarray:
    """`GeometryMaps.height` of an (H, W) depth image [m] and its (H, W) bool valid pixels."""
    z = np.asarray(depth, np.float64)
    v = np.asarray(valid, bool)
    if v.sum() < 16:
        return np.full(z.shape, np.nan, np.float32)
    plane = _plane_depth(z, v)
    h = np.where(v, plane - z, 0.0) * 1e3
    w = ndimage.gaussian_filter(v.astype(np.float64), sigma_px)
    h = ndimage.gaussian_filter(h, sigma_px) / np.maximum(w, 1e-6)
    return np.where(w > 0.2, h, np.nan).astype(np.float32)


def _plane_depth(z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Depth (H, W) of the dominant plane of a depth image. A plane seen through a pinhole
    camera has 1 / z linear in the pixel coordinates, whatever the intrinsics, so the fit is
    a linear least-squares fit of 1 / z, trimmed twice (to the better-fitting half, then to
    3 sigma of what is left) so the part standing on the plane does not tilt it. A
    three-parameter fit: written here rather than pulling in a robust-regression library."""
    H, W = z.shape
    step = max(1, int(np.sqrt(valid.sum() / 4096)))  # about 4k points decide the plane
    vv, uu = np.mgrid[0:H:step, 0:W:step]
    sel = valid[::step, ::step]
    A = np.stack([np.ones(sel.sum()), uu[sel] / W, vv[sel] / H], 1)
    y = 1.0 / z[::step, ::step][sel]

    def residuals(keep):
        coef = np.linalg.lstsq(A[keep], y[keep], rcond=None)[0]
        return coef, np.abs(A @ coef - y)

    _, r = residuals(np.ones(len(y), bool))
    half = r <= np.median(r)
    _, r = residuals(half)
    kept = r[half]
    sigma = median_abs_deviation(kept, scale="normal")
    coef, _ = residuals(r <= np.median(kept) + 3 * sigma)
    V, U = np.mgrid[0:H, 0:W]
    inv = coef[0] + coef[1] * U / W + coef[2] * V / H
    return 1.0 / np.where(np.abs(inv) > 1e-9, inv, 1e-9)


def _bulk_unit(x: torch.Tensor, valid: torch.Tensor, floor: float) -> torch.Tensor:
    """tanh(x / s) with s = max(4 x median of x over valid pixels, floor); x >= 0."""
    v = x[valid].float()
    if v.numel() > 65536:  # a strided subsample gives the same median
        v = v[:: v.numel() // 65536 + 1]
    s = max(4.0 * float(median(v)), floor)
    return torch.tanh(x / s)


def _box_sum(t: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Sum over a centred window of k along `dim`, zero outside: a difference of cumulative
    sums, so the cost does not grow with k (the smoothing window is ~1/8 of the image)."""
    pad = k // 2
    n = t.shape[dim]
    shape = list(t.shape)
    shape[dim] = pad + 1
    zeros = t.new_zeros(shape)
    shape[dim] = pad
    c = torch.cat([zeros, t, t.new_zeros(shape)], dim).cumsum(dim)
    return c.narrow(dim, k, n) - c.narrow(dim, 0, n)


def _nan_box_mean(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """Normalised box filter: mean of x over the valid pixels (weights w) in a k x k window.

    x: (C, H, W), w: (1, H, W) float. Convolution of x*w divided by convolution of w, so invalid
    pixels neither contribute nor bias the mean toward zero. Written by hand (separable running
    sums) because no library offers a masked (normalised) convolution on tensors; avg_pool2d and
    conv2d cost grows with the window and was 3-10x slower on CPU."""
    num = _box_sum(_box_sum(torch.cat([x * w, w]).double(), k, 2), k, 1).float()
    return num[:-1] / num[-1:].clamp_min(1e-6), num[-1:]


def _norm0(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over dim 0, keepdim; sqrt of the sum of squares because
    Tensor.norm(dim=0) over a few channels of a large map was ~40x slower on CPU."""
    return (x * x).sum(0, keepdim=True).sqrt()


def organized_maps(points, smooth_px: int = 0, device: torch.device | str = "cpu") -> GeometryMaps:
    """Geometric maps from an ORGANIZED cloud.

    points: (H, W, 3) float array/tensor in metres, NaN/inf/z<=0 where invalid.
    smooth_px: window of the smoothed reference surface (odd); 0 -> max(7, min(H, W) // 8 | 1).
    """
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"organized cloud must be (H, W, 3), got {tuple(points.shape)}")
    # contiguous: the box sums and differences below were slower on the permuted view (the
    # maps and their image 26 against 33 ms)
    p = points.to(device=device, dtype=torch.float32).permute(2, 0, 1).contiguous()  # (3, H, W)
    H, W = p.shape[1:]
    valid = torch.isfinite(p).all(0) & (p[2] > 0)
    p = torch.where(valid[None], p, torch.zeros_like(p))
    w = valid[None].float()
    if smooth_px <= 0:
        smooth_px = max(7, (min(H, W) // 8) | 1)
    smooth_px |= 1

    # Fill holes with a local mean so the finite differences below see no jumps to zero.
    p_fill, _ = _nan_box_mean(p, w, 5)
    p_f = torch.where(valid[None], p, p_fill)
    # Central differences along the grid: tangents of the surface.
    du = torch.zeros_like(p_f)
    dv = torch.zeros_like(p_f)
    du[:, :, 1:-1] = p_f[:, :, 2:] - p_f[:, :, :-2]
    dv[:, 1:-1, :] = p_f[:, 2:, :] - p_f[:, :-2, :]
    du[:, :, 0], du[:, :, -1] = du[:, :, 1], du[:, :, -2]
    dv[:, 0, :], dv[:, -1, :] = dv[:, 1, :], dv[:, -2, :]
    n = torch.cross(du, dv, dim=0)
    n = n / _norm0(n).clamp_min(1e-12)
    # Orient toward the camera (camera at the origin looking along +z).
    flip = (n * p_f).sum(0, keepdim=True) > 0
    n = torch.where(flip, -n, n)
    n = n * w
    # Curvature: how much the normals spread in a 5x5 window (0 on a plane).
    n_mean, _ = _nan_box_mean(n, w, 5)
    curvature = (1.0 - _norm0(n_mean)[0]).clamp_min(0) * valid
    # Deviation from a smoothed surface: signed distance along the local normal from the point
    # to the mean of a large neighbourhood (a locally fitted plane through that mean).
    p_smooth, _ = _nan_box_mean(p, w, smooth_px)
    n_smooth, _ = _nan_box_mean(n, w, smooth_px)
    n_smooth = n_smooth / _norm0(n_smooth).clamp_min(1e-12)
    deviation = ((p - p_smooth) * n_smooth).sum(0) * valid
    return GeometryMaps(depth=p[2] * valid, normals=n, curvature=curvature,
                        deviation=deviation, valid=valid)


def project_to_grid(points: np.ndarray, intrinsics: CameraIntrinsics,
                    values: Optional[np.ndarray] = None, size: Optional[tuple] = None):
    """Project an unorganized cloud onto the image grid with a z-buffer (nearest point wins).

    points: (N, 3) float in the camera optical frame. values: optional (N, C) per-point values.
    size: (H, W) output grid; default the intrinsics' size (the camera model is rescaled).
    Returns (organized (H, W, 3) float32 with NaN where empty, values (H, W, C) or None, index
    (H, W) int64 of the winning point or -1).
    """
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"unorganized cloud must be (N, 3), got {pts.shape}")
    H0, W0 = intrinsics.height, intrinsics.width
    H, W = size if size is not None else (H0, W0)
    sx, sy = W / W0, H / H0
    ok = np.isfinite(pts).all(1) & (pts[:, 2] > 0)
    idx = np.nonzero(ok)[0]
    x, y, z = pts[idx, 0], pts[idx, 1], pts[idx, 2]
    u = np.floor((intrinsics.fx * x / z + intrinsics.cx) * sx).astype(np.int64)
    v = np.floor((intrinsics.fy * y / z + intrinsics.cy) * sy).astype(np.int64)
    inb = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    idx, u, v, z = idx[inb], u[inb], v[inb], z[inb]
    # Z-buffer: write far to near so the nearest point lands last (numpy keeps the last write).
    order = np.argsort(-z, kind="stable")
    index = np.full((H, W), -1, dtype=np.int64)
    index[v[order], u[order]] = idx[order]
    organized = np.full((H, W, 3), np.nan, dtype=np.float32)
    hit = index >= 0
    organized[hit] = pts[index[hit]]
    vals = None
    if values is not None:
        values = np.asarray(values, dtype=np.float32).reshape(len(pts), -1)
        vals = np.zeros((H, W, values.shape[1]), dtype=np.float32)
        vals[hit] = values[index[hit]]
    return organized, vals, index


def _fill_sparse(organized: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Fill single-pixel holes left by projecting a sparse cloud (mean of valid 3x3 neighbours)."""
    t = torch.from_numpy(organized).permute(2, 0, 1)
    for _ in range(iterations):
        valid = torch.isfinite(t).all(0)
        w = valid[None].float()
        filled, den = _nan_box_mean(torch.nan_to_num(t), w, 3)
        t = torch.where(valid[None] | (den < 0.3), t, filled)
    return t.permute(1, 2, 0).numpy()


#: neighbours of a point for its normal and curvature in an unorganized cloud (open3d's KNN);
#: a cloud of fewer points has no valid pixel
UNORGANIZED_KNN = 20


def unorganized_maps(points: np.ndarray, intrinsics: CameraIntrinsics, size: tuple,
                     fpfh: bool = False, knn: int = UNORGANIZED_KNN, device="cpu"
                     ) -> GeometryMaps:
    """Geometric maps from an UNORGANIZED cloud with open3d, projected onto an (H, W) grid.

    Normals and curvature come from open3d (KNN covariance per point; curvature = smallest
    eigenvalue / trace, the "surface variation"); the deviation comes from the organized path on
    the projected cloud. fpfh=True adds 33-d FPFH descriptors (slow: offline only).
    """
    import open3d as o3d  # imported lazily: the live organized path does not need it

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"unorganized cloud must be (N, 3), got {pts.shape}")
    ok = np.isfinite(pts).all(1) & (pts[:, 2] > 0)
    pts = pts[ok]
    H, W = size
    if len(pts) < knn + 1:
        z = torch.zeros((H, W), device=device)
        return GeometryMaps(z, torch.zeros((3, H, W), device=device), z.clone(), z.clone(),
                            torch.zeros((H, W), dtype=torch.bool, device=device))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    search = o3d.geometry.KDTreeSearchParamKNN(knn=knn)
    pcd.estimate_normals(search)
    pcd.orient_normals_towards_camera_location(np.zeros(3))
    pcd.estimate_covariances(search)
    cov = np.asarray(pcd.covariances)
    eig = np.linalg.eigvalsh(cov)  # ascending
    curv = (eig[:, 0] / np.clip(eig.sum(1), 1e-18, None)).astype(np.float32)
    values = [np.asarray(pcd.normals, dtype=np.float32), curv[:, None]]
    if fpfh:
        # Radius from the median neighbour spacing, as open3d's registration examples do.
        spacing = float(np.median(np.asarray(pcd.compute_nearest_neighbor_distance())))
        feat = o3d.pipelines.registration.compute_fpfh_feature(
            pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=spacing * 5, max_nn=100))
        values.append(np.asarray(feat.data, dtype=np.float32).T)
    organized, vals, _ = project_to_grid(pts.astype(np.float32), intrinsics,
                                         np.concatenate(values, 1), size=(H, W))
    organized = _fill_sparse(organized)
    maps = organized_maps(organized, device=device)
    hit = torch.from_numpy(vals[..., :3].any(-1)).to(device)
    vals_t = torch.from_numpy(vals).to(device).permute(2, 0, 1)
    # Prefer open3d's per-point normals and curvature where a point landed on the pixel.
    maps.normals = torch.where(hit[None], vals_t[:3], maps.normals)
    maps.curvature = torch.where(hit, vals_t[3], maps.curvature)
    if fpfh:
        maps.fpfh = vals_t[4:]
    return maps


def _on_grid(points: np.ndarray, size: tuple):
    """An organized (H0, W0, 3) cloud resampled (nearest) to the (H, W) = size grid."""
    if tuple(points.shape[:2]) == tuple(size):
        return points
    t = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)).permute(2, 0, 1)
    return F.interpolate(t[None], size=size, mode="nearest")[0].permute(1, 2, 0)


def _layout(points: np.ndarray, intrinsics: Optional[CameraIntrinsics]) -> bool:
    """Whether a cloud is organized (else unorganized, which needs intrinsics); raises on
    any other shape."""
    if points.ndim == 3 and points.shape[-1] == 3:
        return True
    if points.ndim == 2 and points.shape[-1] == 3:
        if intrinsics is None:
            raise ValueError("an unorganized cloud needs camera intrinsics to be projected")
        return False
    raise ValueError(f"points must be (H, W, 3) or (N, 3), got {points.shape}")


def geometry_maps(points: np.ndarray, intrinsics: Optional[CameraIntrinsics], size: tuple,
                  device="cpu", fpfh: bool = False) -> GeometryMaps:
    """Dispatch on the cloud layout; the result is on the (H, W) = size grid.

    An organized cloud of another size is resampled (nearest) to the grid; an unorganized one
    needs intrinsics."""
    pts = np.asarray(points)
    if _layout(pts, intrinsics):
        return organized_maps(_on_grid(pts, size), device=device)
    return unorganized_maps(pts, intrinsics, size, fpfh=fpfh, device=device)


def surface_depth(points: np.ndarray, intrinsics: Optional[CameraIntrinsics], size: tuple
                  ) -> tuple:
    """(depth (H, W) float32 metres, 0 where invalid; valid (H, W) bool) of a cloud on the
    (H, W) = size grid: the `depth` and `valid` of its `geometry_maps`, without the normals,
    curvature and deviation that cost most of those (a height map needs none of them)."""
    pts = np.asarray(points)
    if _layout(pts, intrinsics):
        p = _on_grid(pts, size)
        p = p.numpy() if torch.is_tensor(p) else np.asarray(p, np.float32)
    else:  # as `unorganized_maps` projects it (the normals do not move a point)
        p = pts.astype(np.float64)
        p = p[np.isfinite(p).all(1) & (p[:, 2] > 0)]
        if len(p) < UNORGANIZED_KNN + 1:
            return np.zeros(size, np.float32), np.zeros(size, bool)
        p = _fill_sparse(project_to_grid(p.astype(np.float32), intrinsics, size=size)[0])
    z = p[..., 2]
    valid = np.isfinite(p).all(-1) & (z > 0)
    return np.where(valid, z, 0.0).astype(np.float32), valid


def has_valid_point(points: np.ndarray) -> bool:
    """Whether a cloud ((H, W, 3) or (N, 3)) has a point the maps count as valid: finite,
    in front of the camera (z > 0), as in `organized_maps`."""
    p = np.asarray(points)
    return bool((np.isfinite(p).all(-1) & (p[..., 2] > 0)).any())


def scan_curvature_image(curvature: np.ndarray, size: tuple, device="cpu") -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]: a scanner's own curvature map (values in [0, 1], NaN where
    the scan has none) on the image grid, repeated over the three channels a feature extractor
    reads. Used as it is, unlike `GeometryMaps.as_image`: it is already a surface property."""
    c = np.nan_to_num(np.asarray(curvature, np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    t = torch.from_numpy(np.clip(c, 0.0, 1.0)).to(device)[None, None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t[0].expand(3, -1, -1).contiguous()


def centroid_3d(points: np.ndarray, region: np.ndarray,
                intrinsics: Optional[CameraIntrinsics]) -> Optional[tuple]:
    """Median of the valid cloud points under a region mask (H, W) bool; None without depth.

    Organized clouds are indexed directly (resampled if sized differently); unorganized ones are
    projected with the camera model."""
    if points is None:
        return None
    pts = np.asarray(points, dtype=np.float32)
    H, W = region.shape
    if pts.ndim == 3:
        if pts.shape[:2] != (H, W):
            ys = (np.arange(H) * pts.shape[0] / H).astype(int)
            xs = (np.arange(W) * pts.shape[1] / W).astype(int)
            pts = pts[ys][:, xs]
        sel = pts[region]
    else:
        if intrinsics is None:
            return None
        org, _, _ = project_to_grid(pts, intrinsics, size=(H, W))
        sel = org[region]
    sel = sel[np.isfinite(sel).all(1) & (sel[:, 2] > 0)]
    if len(sel) == 0:
        return None
    return tuple(float(x) for x in np.median(sel, axis=0))
