"""One job over many processes or machines: torchrun ranks (ranks.py, distributed.py) and
the split job (part_job.py: which part this process writes, and the join at the end).
These sit above the engine and call it."""
