"""The benchmark shows one sampler under two names once: Euler and DDIM (eta 0) and Euler ancestral and CRASH
are the same samplers under EDM (Karras et al. 2022, Sec. 3; Rouard & Hadjeres 2021)."""

from samplerlab.experiments.bench import BenchConfig, run_bench
from samplerlab.experiments.report import alias_groups, format_bench


def test_aliases_are_listed_once():
    config = BenchConfig(problems=["ring"], solvers=["euler", "ddim", "heun", "euler-ancestral", "crash"], nfes=[5, 8],
                         num_samples=64)
    summaries, rows = run_bench(config)
    groups = alias_groups(rows)
    assert groups == {"euler": ["euler", "ddim"], "heun": ["heun"], "euler-ancestral": ["euler-ancestral", "crash"]}
    table = format_bench(config, summaries, rows)
    labels = [line.split()[0] for line in table.splitlines() if line and line.split()[0] in ("euler", "ddim", "crash")]
    assert "euler = ddim" in table and "euler-ancestral = crash" in table and "ddim" not in labels


def test_one_sample_that_rounds_into_another_mode_does_not_split_an_alias():
    import torch

    from samplerlab.experiments.bench import same_samples

    x = torch.randn(1000, 64)
    flipped = x.clone()
    flipped[3] += 5.0  # a float32 boundary sample that ended in another mode
    rounded = flipped * (1 + 1e-6)
    assert same_samples({5: (5, x), 10: (10, x)}, {5: (5, rounded), 10: (10, x)})
    other = x + 1e-3 * torch.randn_like(x)  # a different solver of the same family
    assert not same_samples({5: (5, x), 10: (10, x)}, {5: (5, x), 10: (10, other)})
    assert not same_samples({5: (5, x)}, {5: (6, x)})  # other counted NFE
    many = x.clone()
    many[:20] += 5.0  # 2 % of the samples differ: another sampler
    assert not same_samples({5: (5, x)}, {5: (5, many)})
