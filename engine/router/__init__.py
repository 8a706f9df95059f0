"""A request router over engine replicas."""
