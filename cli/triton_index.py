"""What a Triton server has loaded: its repository index, every version of every model.

Shared by ``dfd models list`` and ``dfd models rollout start``.
"""

from __future__ import annotations


def served_versions(url: str, command: str) -> dict[str, list[tuple[str, str]]]:
    """Triton's repository index: model -> [(version, state)], every version it knows.

    ``command`` (``models list``) begins the message of the error when Triton does not answer.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from dfd.errors import UpstreamUnavailableError

    client = grpcclient.InferenceServerClient(url)
    try:
        index = client.get_model_repository_index(as_json=True, client_timeout=10)
    except InferenceServerException as exc:
        raise UpstreamUnavailableError(
            f"{command}: expected Triton's repository index at {url}, got {exc.message()}"
        ) from exc
    finally:
        client.close()
    out: dict[str, list[tuple[str, str]]] = {}
    for model in index.get("models", []):
        out.setdefault(model["name"], []).append(
            (model.get("version", "?"), model.get("state", "UNAVAILABLE"))
        )
    return out
