"""Model-side files installed with dfd: ``python_onnx/model.py`` is the ``cpu`` rendering's
Triton python-backend host, which ``dfd models build`` copies into every model version
folder. A package only so that a non-editable install carries it."""
