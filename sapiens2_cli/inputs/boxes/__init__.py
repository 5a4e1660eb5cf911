"""Person crops: box files (box_file.py, formats.py) and upstream's crop of each box into
the model input (crop.py, docs/crop.md)."""
