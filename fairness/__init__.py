"""Group-fairness metrics and statistics for image codecs, free of Lightning imports."""
