"""core/medians.py: torch's median by numpy's partition gives torch's values to the bit, over
every element and along a dimension, for odd and even counts (the lower middle value), ties,
one element, float64, NaN and an integer tensor (both left to torch)."""
import torch

from zsg_iad_ros.core.medians import median


def test_the_median_is_torchs_to_the_bit():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 5, 64, 4096, 4097):
        x = torch.rand(3, n, generator=g, dtype=torch.float64 if n == 5 else torch.float32)
        x[0, : n // 3] = 0.5  # ties
        assert torch.equal(median(x, 1), x.median(1).values), n
        assert torch.equal(median(x[:, ::2], 1), x[:, ::2].median(1).values), n  # a strided view
        assert torch.equal(median(x.T, 0), x.T.median(0).values), n
        assert torch.equal(median(x), x.median()), n
        assert median(x).shape == x.median().shape == ()
    x = torch.rand(3, 100, generator=g)
    x[1, 7] = float("nan")  # numpy's partition would not return it
    torch.testing.assert_close(median(x, 1), x.median(1).values, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(median(x))
    ints = torch.arange(10)
    assert torch.equal(median(ints), ints.median())
