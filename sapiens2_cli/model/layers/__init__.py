"""Building blocks of the Sapiens2 backbone, one per file."""

from sapiens2_cli.model.layers.attention import Attention
from sapiens2_cli.model.layers.block import Block
from sapiens2_cli.model.layers.ffn import SwiGLUFFN
from sapiens2_cli.model.layers.norm import LayerScale, RMSNorm
from sapiens2_cli.model.layers.rope import RopeEmbedding, apply_rope, rope_tables, rotate_half

__all__ = [
    "Attention",
    "Block",
    "LayerScale",
    "RMSNorm",
    "RopeEmbedding",
    "SwiGLUFFN",
    "apply_rope",
    "rope_tables",
    "rotate_half",
]
