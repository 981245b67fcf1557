"""The ``cpu`` host, ``model.py`` (imported only by Triton's python backend, never here)."""
