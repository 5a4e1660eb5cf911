"""What becomes a row: listing files (sources.py), keys and items (items.py), and one module
or package per kind of input: photos (decode.py), tar shards (tar.py), videos (video/),
Parquet / Arrow tables (tables/), person crops from a box file (boxes/)."""
