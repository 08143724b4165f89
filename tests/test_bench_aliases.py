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
