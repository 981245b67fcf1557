"""The deepfake_ensemble: the fusion model and the ensemble wiring served by Triton."""
