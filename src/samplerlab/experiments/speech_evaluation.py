"""Scoring a cell on real recordings: the test split of a speech corpus, enhanced with the exact
Gaussian-prior model (``speech.gaussian``) or a trained network, and scored against the clean
references with the speech metrics (``metrics.speech``; names and directions in
``metrics.registry``). Every cell enhances the same files with the same seeds.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from ..denoisers import LevelShift
from ..metrics.speech import check_metrics, min_samples_for, speech_metrics
from ..processes import Process
from .config import ExperimentConfig
from .evaluation import summary

__all__ = ["SpeechEvaluation"]


class SpeechEvaluation:
    def __init__(self, config: ExperimentConfig, base: Process):
        from ..speech.data import find_speech_pairs, load_pair
        from ..speech.enhance import load_enhancement_model
        from ..speech.gaussian import corpus_prior

        self.config, self.base = config, base
        self.model = load_enhancement_model(config.model, corpus=config.corpus, prior_mode=config.prior)
        if self.model.process is not None:  # a model that brings its own process (an SGMSE+ checkpoint)
            self.base = self.model.process
        self.gaussian = self.model.denoiser if config.model == "gaussian" else corpus_prior(config.corpus, config.prior)
        self.dnsmos = None
        if config.dnsmos or any(m.startswith("dnsmos_") for m in config.metrics):
            from ..metrics.dnsmos import DNSMOS

            # None: the models speechmos ships; scored between enhancements, so it may use every thread
            self.dnsmos = DNSMOS(config.dnsmos or None, threads=torch.get_num_threads())
        check_metrics(config.metrics, self.dnsmos)  # fail now, not after the first cell
        pairs = find_speech_pairs(config.corpus, "test")[: config.files]
        rate = self.model.spec.sample_rate
        self.signals = [load_pair(p, rate, min_samples=min_samples_for(config.metrics)) for p in pairs]
        self.n = len(self.signals)

    def _score_all(self, estimates) -> dict:
        per = [
            speech_metrics(clean, est, self.config.metrics, dnsmos=self.dnsmos)
            for (clean, _), est in zip(self.signals, estimates)
        ]
        return {m: summary(torch.tensor([p[m] for p in per]), keep=True) for m in self.config.metrics}

    def baselines(self) -> dict[str, dict]:
        from ..speech.frontend import spec_to_wav, wav_to_spec
        from ..speech.gaussian import channels_to_complex, complex_to_channels

        wiener = []
        for _, noisy in self.signals:
            peak = float(noisy.abs().max())
            y = complex_to_channels(wav_to_spec(noisy.double() / peak)).unsqueeze(0)
            wiener.append(spec_to_wav(channels_to_complex(self.gaussian.posterior_mean(y)[0]), noisy.shape[-1]) * peak)
        return {
            "noisy input y": self._score_all([n for _, n in self.signals]),
            f"{self.config.prior} Gaussian prior's posterior mean (Wiener)": self._score_all(wiener),
        }

    def run(self, process: Process, grid: Tensor, solver, model_sigmas=None) -> dict:
        from ..speech.enhance import enhance

        start = time.perf_counter()
        m = self.model
        denoiser = m.denoiser if model_sigmas is None else LevelShift(m.denoiser, grid, model_sigmas)
        outs = [
            enhance(
                noisy,
                denoiser,
                solver,
                grid=grid,
                process=process,
                seed=self.config.seed + i,
                spec=m.spec,
                pad_multiple=m.pad_multiple,
                dtype=m.dtype,
            )
            for i, (_, noisy) in enumerate(self.signals)
        ]
        seconds = time.perf_counter() - start
        return {
            "nfe": outs[0].nfe,
            "seconds": seconds,
            "rtf": seconds / sum(o.audio_seconds for o in outs),
            "metrics": self._score_all([o.wav for o in outs]),
        }
