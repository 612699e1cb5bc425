"""Pure group-fairness metrics and statistics (numpy, scipy, pandas, statsmodels; no Lightning)."""
