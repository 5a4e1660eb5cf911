"""The HDF5 output: one file (writer.py), and joins of parts into one (join.py)."""
