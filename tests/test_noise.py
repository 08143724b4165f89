"""The per-sample noise streams: Philox4x32-10 against its known-answer vectors, a sample's noise a function
of its seed alone (bit for bit in float64 whatever the batch, its order or how requests are split), the
moments of a standard normal, dtypes that follow the state, and clear errors for bad seeds."""

import math

import pytest
import torch

from samplerlab.noise import SampleNoise, philox4x32

M = 0xFFFFFFFF


@pytest.mark.parametrize("counter, key, expected", [
    # known-answer vectors of the reference implementation (Salmon et al. 2011, Random123's kat_vectors)
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M, M, M, M), (M, M), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(counter, key, expected):
    out = philox4x32(torch.tensor([counter]), torch.tensor([key]))
    assert tuple(int(v) for v in out[0]) == expected


SHAPES = [(3,), (1,), (31,), (33,), (1000,), (2, 2), (5,), (64,), (7,)]  # across the prefetch boundary


def _stream(seeds, shapes=SHAPES):
    noise = SampleNoise(seeds, dtype=torch.float64)
    return [noise.randn(*s) for s in shapes]


def test_noise_depends_only_on_the_seed_bit_for_bit():
    seeds = list(range(1000))
    reference = _stream(seeds)
    for batch in ([417], [5, 999, 0, 31, 7, 600, 2], seeds[::-1]):
        for got, ref in zip(_stream(batch), reference):
            assert torch.equal(got, ref[batch])


def test_requests_take_the_next_normals_of_one_stream():
    whole = SampleNoise([3, 8], dtype=torch.float64).randn(100)
    parts = SampleNoise([3, 8], dtype=torch.float64)
    pieces = [parts.randn(n) for n in (1, 30, 2, 40, 27)]
    assert torch.equal(torch.cat(pieces, dim=1), whole)
    like = SampleNoise([3, 8], dtype=torch.float64).randn_like(torch.empty(2, 10, 10, dtype=torch.float64))
    assert torch.equal(like.reshape(2, 100), whole)


def test_standard_normal_moments_and_independent_streams():
    z = SampleNoise(range(20000), dtype=torch.float64).randn(16)
    flat = z.flatten()
    n = flat.numel()
    assert abs(float(flat.mean())) < 4 / math.sqrt(n)
    assert abs(float(flat.var()) - 1) < 4 * math.sqrt(2 / n)
    assert abs(float((flat**4).mean()) - 3) < 4 * math.sqrt(96 / n)
    assert float(flat.abs().max()) < 6.7  # Box-Muller on 32-bit uniforms: |z| <= sqrt(64 log 2)
    corr = torch.corrcoef(torch.cat([z[:-1], z[1:]], dim=1).T)[:16, 16:]  # seed s against seed s + 1
    assert float(corr.abs().max()) < 5 / math.sqrt(len(z))
    within = torch.corrcoef(z.T) - torch.eye(16, dtype=torch.float64)  # successive draws of one stream
    assert float(within.abs().max()) < 5 / math.sqrt(len(z))


def test_dtype_follows_the_state_and_agrees_up_to_rounding():
    x64 = torch.empty(3, 4, dtype=torch.float64)
    a = SampleNoise([1, 2, 3], dtype=torch.float32).randn_like(x64)
    b = SampleNoise([1, 2, 3], dtype=torch.float64).randn_like(x64)
    assert a.dtype == torch.float64 and torch.equal(a, b)  # not float32 noise for a float64 state
    # float32 noise is made in float32 from the same words: equal up to float32 rounding, whose largest
    # absolute effect (~1e-5) is at tiny radii, where u = 1 - r^2 / 2 is coarse in float32
    f64 = SampleNoise(range(1000), dtype=torch.float64).randn(1000)
    f32 = SampleNoise(range(1000)).randn(1000)
    assert f32.dtype == torch.float32
    gap = (f32.double() - f64).abs()
    assert float(gap.max()) < 5e-5
    assert float((gap / f64.abs())[f64.abs() > 0.1].max()) < 2e-5


def test_a_change_of_precision_keeps_the_stream_position():
    whole = SampleNoise([4, 9], dtype=torch.float64).randn(40)
    mixed = SampleNoise([4, 9], dtype=torch.float64)
    first = mixed.randn_like(torch.empty(2, 3))  # float32, 3 normals: the buffer now ends inside a block
    rest = mixed.randn_like(torch.empty(2, 37, dtype=torch.float64))
    assert torch.equal(rest, whole[:, 3:])
    assert torch.allclose(first.double(), whole[:, :3], atol=5e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_noise_is_batch_invariant_too(dtype):
    reference = SampleNoise(range(300), dtype=dtype)
    reference.plan(5)
    ref = [reference.randn(3) for _ in range(5)]
    for batch in ([7], [299, 3, 150], list(range(300))[::-1]):
        noise = SampleNoise(batch, dtype=dtype)  # other batch, no plan: other block counts per call
        for r in ref:
            assert torch.equal(noise.randn(3), r[batch])


@pytest.mark.parametrize("bad", [[1.5], [-1], ["3"], [2**64], [0, 2, float("nan")]])
def test_bad_seeds_are_named(bad):
    with pytest.raises(ValueError, match="seeds must be integers in \\[0, 2\\^64\\)"):
        SampleNoise(bad)


def test_large_seeds_use_both_key_words():
    a = SampleNoise([5], dtype=torch.float64).randn(4)
    b = SampleNoise([5 + 2**32], dtype=torch.float64).randn(4)
    assert not torch.equal(a, b)
    assert torch.isfinite(SampleNoise([2**64 - 1]).randn(8)).all()
