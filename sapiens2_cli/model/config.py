"""Architecture configs: one dataclass for the family, one entry per published size."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sapiens2_cli.errors import Sapiens2Error

#: ImageNet statistics on the 0-255 scale, RGB order, as the Sapiens2 test pipelines use.
PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

#: Blocks at each end of the stack that keep full multi-head attention; the rest use GQA.
FULL_ATTENTION_BLOCKS = 8


@dataclass(frozen=True)
class Sapiens2Config:
    """Everything that fixes the shape of a Sapiens2 backbone."""

    embed_dim: int  # D, width of every token
    num_layers: int  # L, transformer blocks
    num_heads: int  # query heads; head dim Dh = D / num_heads
    ffn_dim: int  # SwiGLU hidden width F (w12 maps D -> 2F)
    num_tokenizer_layers: int = 0  # >0: the 4K windowed tokenizer runs before the blocks
    kv_heads: tuple[int, ...] | None = None  # per block; None: the standard GQA pattern
    patch_size: int = 16
    num_storage_tokens: int = 8  # register tokens after the class token
    tokenizer_window: int = 4  # ws: the tokenizer pools ws x ws patches into one token
    rope_base: float = 100.0
    norm_eps: float = 1e-6
    image_size: tuple[int, int] = (1024, 768)  # training resolution (H, W)
    name: str | None = field(default=None, compare=False)  # zoo name, None for custom

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads"
            )
        if self.head_dim % 4:
            raise ValueError(f"head dim {self.head_dim} must be a multiple of 4 for 2D RoPE")
        if self.kv_heads is not None and len(self.kv_heads) != self.num_layers:
            raise ValueError(f"kv_heads lists {len(self.kv_heads)} blocks, not {self.num_layers}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def use_tokenizer(self) -> bool:
        return self.num_tokenizer_layers > 0

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_storage_tokens

    @property
    def size_multiple(self) -> int:
        """Image height and width must be multiples of this."""
        return self.patch_size * (self.tokenizer_window if self.use_tokenizer else 1)

    def block_kv_heads(self) -> tuple[int, ...]:
        """Key/value heads of each block: full at both ends, half in between."""
        if self.kv_heads is not None:
            return self.kv_heads
        return tuple(
            self.num_heads
            if i < FULL_ATTENTION_BLOCKS or i >= self.num_layers - FULL_ATTENTION_BLOCKS
            else self.num_heads // 2
            for i in range(self.num_layers)
        )

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) after patch embedding and, if present, the tokenizer."""
        self.check_image_size(height, width)
        return height // self.size_multiple, width // self.size_multiple

    def num_tokens(self, height: int, width: int) -> int:
        h, w = self.grid_size(height, width)
        return self.num_prefix_tokens + h * w

    def check_image_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise Sapiens2Error(
                f"image size {height}x{width} is not a positive multiple of {m}"
                f"{' (the 4K tokenizer pools 4x4 patches)' if self.use_tokenizer else ''}: "
                f"choose e.g. {max(m, round(height / m) * m)}x{max(m, round(width / m) * m)}"
            )


def _zoo(
    name: str, d: int, layers: int, heads: int, ffn: int, tok: int = 0, size=(1024, 768)
) -> Sapiens2Config:
    return Sapiens2Config(d, layers, heads, ffn, tok, image_size=size, name=name)


#: The published sizes (docs/model.md, "The six sizes").
ARCHS: dict[str, Sapiens2Config] = {
    c.name: c
    for c in (
        _zoo("0.1b", 768, 12, 12, 3072),
        _zoo("0.4b", 1024, 24, 16, 4096),
        _zoo("0.8b", 1280, 32, 16, 5120),
        _zoo("1b", 1536, 40, 24, 6144),
        _zoo("1b-4k", 1536, 40, 24, 6144, tok=4, size=(4096, 3072)),
        _zoo("5b", 2432, 56, 32, 9728),
    )
}


def normalize_arch_name(name: str) -> str:
    """Accept '1b', '1B', 'sapiens2_1b', '1b_4k' and the like; return the zoo key."""
    key = name.strip().lower().replace("_", "-")
    for prefix in ("sapiens2-pretrain-", "sapiens2-"):
        key = key.removeprefix(prefix)
    return key


def get_config(arch: str) -> Sapiens2Config:
    """The config of a published arch, or a Sapiens2Error listing the valid names."""
    key = normalize_arch_name(arch)
    if key not in ARCHS:
        raise Sapiens2Error(f"unknown arch '{arch}': choose one of {', '.join(ARCHS)}")
    return ARCHS[key]


def match_arch(config: Sapiens2Config) -> str | None:
    """The zoo name whose shapes equal `config` (ignoring training size), or None."""
    for name, known in ARCHS.items():
        if replace(config, image_size=known.image_size) == known:
            return name
    return None
