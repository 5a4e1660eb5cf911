"""The Sapiens2 vision transformer: patch embedding, optional 4K tokenizer, blocks, final norm.

Parameter names match the official checkpoints, so their state dicts load with strict=True.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sapiens2_cli.config.choices import Layout, TokenMode
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.config import Sapiens2Config
from sapiens2_cli.model.layers import Block, RMSNorm, RopeEmbedding
from sapiens2_cli.model.tokens import select_tokens


class PatchEmbed(nn.Module):
    """Conv2d(3 -> D, kernel = stride = patch), stored as `patch_embed.projection`."""

    def __init__(self, dim: int, patch_size: int, device=None, dtype=None) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            3, dim, patch_size, stride=patch_size, device=device, dtype=dtype
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels)  # (B, D, h, w)


class WindowTokenizer(nn.Module):
    """Pools each ws x ws window of patch tokens into one token with a small transformer.

    Used by 1b-4k: every window becomes [w_cls] + ws*ws tokens (+ local_pos_embed), runs
    through plain multi-head blocks (no QK-norm, LayerScale or RoPE), and the output at
    position 0 replaces the window.
    """

    def __init__(self, config: Sapiens2Config, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        d, ws = config.embed_dim, config.tokenizer_window
        self.window = ws
        self.w_cls = nn.Parameter(torch.empty(1, 1, d, **dd))
        self.local_pos_embed = nn.Parameter(torch.empty(1, ws * ws + 1, d, **dd))
        self.blocks = nn.ModuleList(
            Block(
                d,
                config.num_heads,
                config.num_heads,
                config.ffn_dim,
                qk_norm=False,
                layer_scale=False,
                eps=config.norm_eps,
                **dd,
            )
            for _ in range(config.num_tokenizer_layers)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.w_cls.is_meta:
            nn.init.normal_(self.w_cls, std=0.02)
            nn.init.normal_(self.local_pos_embed, std=0.02)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) patch tokens -> (B, h/ws, w/ws, D) window tokens."""
        B, h, w, D = grid.shape
        ws = self.window
        windows = grid.reshape(B, h // ws, ws, w // ws, ws, D).transpose(2, 3)
        windows = windows.reshape(-1, ws * ws, D)  # (B * windows, ws*ws, D), row-major
        x = torch.cat((self.w_cls.expand(windows.shape[0], -1, -1), windows), dim=1)
        x = x + self.local_pos_embed
        for block in self.blocks:
            x = block(x)
        return x[:, 0].reshape(B, h // ws, w // ws, D)


class LayerIndexError(Sapiens2Error, IndexError):
    """A block index outside the model: an IndexError for Python callers, one line for the CLI."""


def resolve_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Block indices as numbers from 0, negatives counted from the end (-1 is the last)."""
    for i in layers:
        if not -num_layers <= i < num_layers:
            raise LayerIndexError(
                f"layer {i} is out of range: this model has blocks 0..{num_layers - 1} "
                f"(or -1..-{num_layers} from the end)"
            )
    return tuple(i % num_layers for i in layers)


class Sapiens2Backbone(nn.Module):
    """Sapiens2 backbone: (B, 3, H, W) normalized pixels -> (B, 9 + h*w, D) tokens.

    Token order is [cls, 8 storage tokens, h*w patches in row-major order].
    Build on `device="meta"` to size a model without memory; `load_backbone` fills it.
    """

    def __init__(self, config: Sapiens2Config, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        d = config.embed_dim
        self.config = config
        self.patch_embed = PatchEmbed(d, config.patch_size, **dd)
        self.tokenizer = WindowTokenizer(config, **dd) if config.use_tokenizer else None
        self.cls_token = nn.Parameter(torch.empty(1, 1, d, **dd))
        self.storage_tokens = nn.Parameter(torch.empty(1, config.num_storage_tokens, d, **dd))
        self.rope_embed = RopeEmbedding(config.head_dim, config.rope_base, device=device)
        self.blocks = nn.ModuleList(
            Block(d, config.num_heads, kv, config.ffn_dim, eps=config.norm_eps, **dd)
            for kv in config.block_kv_heads()
        )
        self.ln1 = RMSNorm(d, config.norm_eps, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.cls_token.is_meta:
            nn.init.normal_(self.cls_token, std=0.02)
            nn.init.normal_(self.storage_tokens, std=0.02)

    def resolve_layers(self, layers: Sequence[int]) -> list[int]:
        """Block indices with negatives counted from the end (-1 is the last block)."""
        return list(resolve_layers(layers, len(self.blocks)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Final-normed output of the last block, (B, 9 + h*w, D)."""
        return self.forward_layers(pixels, [-1])[0]

    def forward_layers(self, pixels: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the given blocks in one pass, in the order asked, each (B, 9 + h*w, D).

        The last block's output goes through the final norm; earlier blocks' do not.
        Blocks after the deepest one asked for are not run.
        """
        indices = self.resolve_layers(layers)
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels of shape (B, 3, H, W), got {tuple(pixels.shape)}")
        h, w = self.config.grid_size(pixels.shape[2], pixels.shape[3])
        x = self.patch_embed(pixels.to(self.cls_token.dtype))  # (B, D, H/16, W/16)
        x = x.flatten(2).transpose(1, 2)  # (B, H/16 * W/16, D), row-major
        if self.tokenizer is not None:
            B, _, D = x.shape
            grid = x.reshape(B, h * self.tokenizer.window, w * self.tokenizer.window, D)
            x = self.tokenizer(grid).flatten(1, 2)  # (B, h*w, D)
        prefix = torch.cat((self.cls_token, self.storage_tokens), dim=1)
        x = torch.cat((prefix.expand(x.shape[0], -1, -1), x), dim=1)  # (B, 9 + h*w, D)
        rope = self.rope_embed(h, w)
        wanted = set(indices)
        outputs: dict[int, torch.Tensor] = {}
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks[: max(indices) + 1]):
            x = block(x, rope)
            if i in wanted:
                outputs[i] = self.ln1(x) if i == last else x
        return [outputs[i] for i in indices]

    def forward_kept(
        self,
        pixels: torch.Tensor,
        layers: Sequence[int],
        tokens: TokenMode | str = TokenMode.ALL,
        layout: Layout | str = Layout.TOKENS,
    ) -> torch.Tensor:
        """The given blocks' outputs stacked, (B, n_layers, ...), keeping `tokens` in
        `layout`: all (B, L, 9 + h*w, D), cls or mean (B, L, D), patch (B, L, h*w, D),
        or patch as a map (B, L, D, h, w). Shape without running: `model.tokens.row_shape`.
        """
        outputs = self.forward_layers(pixels, layers)
        grid = self.config.grid_size(pixels.shape[2], pixels.shape[3])
        return select_tokens(outputs, tokens, layout, grid)
