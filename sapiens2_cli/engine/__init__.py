"""The extract job on one process: plan and checks (job.py, resume.py), the loop
(runner.py), batches (loader.py), the device stage (forward.py), the writer thread
(background.py), progress and profiling.

Data walks one way: inputs/ (files -> items -> decoded pixels) -> loader (batches) ->
forward (backbone, then reduce/: pool, project, cast) -> output/ (a writer). How a job is
split over processes or machines is scaleout/'s, above this package.
"""
