"""Parquet and Arrow inputs: reading columns (columnar.py) and the source whose rows are
table rows (parquet.py)."""
