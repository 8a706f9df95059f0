"""The release gate: criteria as data, an evaluator, the A/B/C decision and its report."""
