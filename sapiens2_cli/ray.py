"""Building blocks for pipelines already in Ray Data (pip install 'sapiens2-cli[ray]'):
`FeatureExtractor`, the extract model stage as a `Dataset.map_batches` class (docs/api.md)."""

from sapiens2_cli.scaleout.ray.extractor import FeatureExtractor

__all__ = ["FeatureExtractor"]
