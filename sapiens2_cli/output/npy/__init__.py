"""The npy output: a folder of .npy shards and a manifest (writer.py), each shard written
in place (shard_file.py)."""
