"""Analysis: MONAI's DataAnalyzer on the datalist (``datastats.yaml``) and a review a person can
read (``datastats_review.md``, figures, flags)."""

import warnings

# MONAI's own transforms inside DataAnalyzer warn of a changed default in every run (and in each worker
# process, which imports this package): nothing a user can act on
warnings.filterwarnings("ignore", message=r".*Orientationd.__init__:labels", category=FutureWarning)
