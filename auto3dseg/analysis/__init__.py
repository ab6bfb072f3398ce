"""Analysis: MONAI's DataAnalyzer on the datalist (``datastats.yaml``) and a review a person can
read (``datastats_review.md``, figures, flags)."""
