"""NumPy Generator states as JSON: the 128-bit PCG64 integers become strings, so a checkpoint's
metadata stays plain JSON and restores a generator bit for bit."""

__all__ = ["generator_state_to_json", "generator_state_from_json"]


def generator_state_to_json(state):
    return {"bit_generator": state["bit_generator"], "state": {k: str(v) for k, v in state["state"].items()},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def generator_state_from_json(data):
    return {"bit_generator": data["bit_generator"], "state": {k: int(v) for k, v in data["state"].items()},
            "has_uint32": int(data["has_uint32"]), "uinteger": int(data["uinteger"])}
