"""Own PyTorch implementations of the published detectors, loading the official weights."""
