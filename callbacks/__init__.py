"""Lightning callbacks: per-group fairness metrics each validation epoch, image logging,
and the run files (provenance)."""
