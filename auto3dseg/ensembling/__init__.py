"""Ensembling: MONAI's best-by-fold selection, probabilities averaged over the chosen bundles,
and predictions (with labels) from whatever a user has trained."""
