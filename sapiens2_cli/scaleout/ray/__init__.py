"""`--engine ray`: one extract job run as Ray Data tasks (decoding) and actors (the model), on
a Ray cluster or a Ray instance started for the run (docs/scaling.md, "Ray")."""
