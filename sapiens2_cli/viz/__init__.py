"""Pictures of extracted features: PCA components of the patch grid as colours.

patches (a stored row -> a (h, w, D) grid) -> pca (fit, scale) -> render (pictures) ->
run (the command's loop over a feature file).
"""

from sapiens2_cli.viz.run import VizOptions, VizResult, visualize

__all__ = ["VizOptions", "VizResult", "visualize"]
