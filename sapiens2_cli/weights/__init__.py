"""Where a checkpoint comes from: short names -> Hugging Face repositories (hub.py), an arch
or a path -> a local file and its sha256 (resolve.py)."""
