"""The worker side of dfd: from a URL or a file to a verdict with evidence."""
