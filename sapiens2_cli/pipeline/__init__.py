"""Images in, feature rows out: listing inputs, decoding, batching, the extract loop.

The stages walk one way: sources (paths) -> decode (uint8 pixels, in worker processes) ->
loader (batches) -> extract (model, on the device) -> a writer (on a background thread).
"""
