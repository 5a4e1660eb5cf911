"""`extract --project`: the projection applied on the device, between the kept tokens
(pooled, if asked) and the storage cast, in float32 whatever the compute precision.

Beside the k-wide features it gives each row's energy (float64): the sums over the row's
tokens of ||y||^2 and of ||x - mean||^2. The writer adds them into the running sums of the
`pca` reduction's record at each commit (reduce/losses.py), which a resume continues
and a merge adds up, so the share of variance kept on the rows written stays exact.
"""

from __future__ import annotations

import torch

from sapiens2_cli.config.choices import Layout
from sapiens2_cli.reduce.projection import Projection


class DeviceProjection:
    """A projection's mean and components on the device, applied to kept features."""

    def __init__(self, projection: Projection, layout: Layout, device: torch.device) -> None:
        self.mean = torch.from_numpy(projection.mean).to(device)
        self.components = torch.from_numpy(projection.components).to(device)
        self.layout = layout

    def __call__(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, ...) features -> (projected, (B, 2) float64 energies)."""
        axis = Layout(self.layout).feature_axis
        with torch.autocast(kept.device.type, enabled=False):
            centred = kept.float().movedim(axis, -1) - self.mean
            y = centred @ self.components.T
        energy = torch.stack(
            (
                y.double().square().flatten(1).sum(1),
                centred.double().square().flatten(1).sum(1),
            ),
            dim=1,
        )
        return y.movedim(-1, axis), energy


def project(
    kept: torch.Tensor, projection: DeviceProjection | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`kept` projected, with its rows' energies; unchanged (and None) without one."""
    return (kept, None) if projection is None else projection(kept)
