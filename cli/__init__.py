"""The roof: the ``dfd`` command and the local stack (local Redis, local Triton, supervisor,
serve, demo, analyze). It may import every other package of the project; none imports it."""
