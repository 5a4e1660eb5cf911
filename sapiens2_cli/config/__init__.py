"""What a run is asked to do, declared once: the fixed choices, the settings an output
records (with their defaults, meanings and resume rules), the extract options record, and
parsing of values given as text. Imports nothing heavy: the CLI reads it to build --help."""
