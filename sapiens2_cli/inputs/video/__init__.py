"""Video inputs: listing the frames kept (probe.py), decoding them (decoder.py), and the
source that makes them rows (source.py)."""
