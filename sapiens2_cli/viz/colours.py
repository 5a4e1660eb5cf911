"""Principal components of patch features, scaled to [0, 1] so they can be shown as colours.

A fit sees a bounded number of patches (one image's, or a sample across many images for a
joint fit), so its cost does not grow with the feature file. Component signs are fixed by
one rule, so colours do not flip at random: the image border (usually background) projects
to the low end of every component.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Robust colour range: the 1st and 99th percentiles of the fitted patches map to 0 and 1.
LOW_QUANTILE = 0.01
HIGH_QUANTILE = 0.99
_OVERSAMPLE = 10  # extra directions for the randomized SVD, for accurate leading components
_SEED = 0


@dataclass(frozen=True)
class PcaBasis:
    """k principal directions and the value range that maps each onto [0, 1]."""

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (D, k)
    low: torch.Tensor  # (k,)
    high: torch.Tensor  # (k,)

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, k) component values clamped to [0, 1]."""
        z = (x - self.mean) @ self.components
        return ((z - self.low) / (self.high - self.low).clamp_min(1e-12)).clamp(0.0, 1.0)


def fit_basis(x: torch.Tensor, k: int, border: torch.Tensor) -> PcaBasis:
    """Fit k components to x (N, D), oriented so `border` patches (M, D) sit low.

    Randomized (`torch.pca_lowrank`) with a fixed seed: fast for large D and the same
    colours on every run. With fewer than k directions in the data (a tiny grid, a sliver
    of a letterboxed image), the missing components are zero: a constant channel.
    """
    x = x.float()
    n, d = x.shape
    mean = x.mean(dim=0)
    centred = x - mean
    q = min(k + _OVERSAMPLE, n - 1, d)  # n patches span at most n - 1 directions
    components = torch.zeros(d, k)
    if q > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            _, _, v = torch.pca_lowrank(centred, q=q, center=False, niter=4)
        components[:, : min(k, q)] = v[:, :k]
    z = centred @ components  # (N, k)
    flip = (border.float() - mean) @ components
    sign = torch.where(flip.mean(dim=0) > z.mean(dim=0), -1.0, 1.0) if len(border) else 1.0
    components = components * sign
    z = z * sign
    bounds = torch.quantile(z, torch.tensor([LOW_QUANTILE, HIGH_QUANTILE]), dim=0)
    return PcaBasis(mean, components, bounds[0], bounds[1])


@dataclass(frozen=True)
class Colouring:
    """What turns patch features into pixels: colour components and an optional mask."""

    colour: PcaBasis  # k components -> channels
    mask: PcaBasis | None  # the first component of all patches; None: keep everything
    threshold: float | None  # foreground where the scaled mask component is above this

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, k) colour values, plus a last column of mask values if masking."""
        values = self.colour.scaled(x)
        if self.mask is None:
            return values
        return torch.cat((values, self.mask.scaled(x)), dim=1)


def fit_colouring(
    x: torch.Tensor, border: torch.Tensor, k: int, threshold: float | None
) -> Colouring:
    """Fit the colours to x (N, D); with a threshold, DINO-style, in two steps.

    The first component over all patches separates foreground from background; the colour
    components are then fitted on the foreground patches alone, so the colours spend their
    range on the subject. If fewer than two patches clear the threshold, the picture will be
    all background anyway and the colours are fitted on every patch.
    """
    if threshold is None:
        return Colouring(fit_basis(x, k, border), None, None)
    mask = fit_basis(x, 1, border)
    foreground = mask.scaled(x.float())[:, 0] > threshold
    fitted = x[foreground] if int(foreground.sum()) >= 2 else x
    return Colouring(fit_basis(fitted, k, border), mask, threshold)
