"""torch's median, to the same bits, in a fraction of its time on the CPU.

No ROS here. `Tensor.median` is a sort on the CPU: 2-3 ms for the 65k pixels of one image and
three channels, where numpy's partition takes 0.25 ms. Both give the lower of the two middle
values for an even count; NaN, which numpy's partition would sort past the middle instead of
returning, and tensors on other devices or of types numpy lacks, are left to torch.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["median"]


def median(x: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """`x.median()` (dim None: over every element, a 0-d tensor) or `x.median(dim).values`."""
    if (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64)
            or x.numel() == 0 or bool(torch.isnan(x).any())):
        return x.median() if dim is None else x.median(dim).values
    a = x.detach().reshape(-1).numpy() if dim is None else x.detach().numpy()
    axis = 0 if dim is None else dim
    k = (a.shape[axis] - 1) // 2
    return torch.from_numpy(np.asarray(np.take(np.partition(a, k, axis=axis), k, axis=axis)))
