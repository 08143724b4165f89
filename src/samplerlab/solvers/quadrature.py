"""Adams weights: integrals of the Lagrange basis over a step, shared by the multistep solvers (DEIS, LMS)
and the final steps to sigma = 0 that keep a solver's order."""

from __future__ import annotations

import numpy as np

__all__ = ["lagrange_weights"]

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def lagrange_weights(points: list[float], a: float, b: float, node_map=None) -> list[float]:
    """int_a^b l_j(m(v)) dv for the Lagrange basis l_j through ``points`` (Gauss-Legendre, 8 nodes).

    With m the identity this is int_a^b l_j(v) dv (rhoAB). tAB's int sigma'(t) l_j(t) dt becomes, by the
    substitution sigma = sigma(t), int_{sigma_i}^{sigma_{i+1}} l_j(t(sigma)) dsigma: a smooth integrand even
    where sigma'(t) is singular (VP near t = 0), and exactly the step in sigma for a constant.
    """
    v = 0.5 * (b - a) * _GL_NODES + 0.5 * (a + b)
    w = _GL_WEIGHTS * 0.5 * (b - a)
    if node_map is not None:
        v = node_map(v)
    out = []
    for j, pj in enumerate(points):
        basis = np.ones_like(v)
        for k, pk in enumerate(points):
            if k != j:
                basis = basis * (v - pk) / (pj - pk)
        out.append(float(np.sum(w * basis)))
    return out
