"""Validating data against the published schemas: an `/openapi.json` component or a stream event's JSON Schema.

Shared by the schema unit tests and the real-server tests (a plain module, like servers.py)."""

from __future__ import annotations

from typing import Any

import jsonschema_rs


class Published:
    """The schemas a server publishes (or, without a server, what xemo/schemas.py generates)."""

    def __init__(self, openapi: dict[str, Any], events: dict[str, dict[str, Any]]) -> None:
        self.openapi = openapi
        self.events = events
        self._cache: dict[str, Any] = {}

    def component(self, name: str, instance: Any) -> None:
        """Raise jsonschema_rs.ValidationError unless `instance` is a valid `components.schemas[name]`."""
        if name not in self._cache:
            root = {"$ref": f"#/components/schemas/{name}", "components": self.openapi["components"]}
            self._cache[name] = jsonschema_rs.Draft202012Validator(root)
        self._cache[name].validate(instance)

    def event(self, instance: dict[str, Any]) -> None:
        """Validate a stream event against the schema published for its own type."""
        key = "event:" + instance["type"]
        if key not in self._cache:
            self._cache[key] = jsonschema_rs.Draft202012Validator(self.events[instance["type"]])
        self._cache[key].validate(instance)


def generated() -> Published:
    from xemo import schemas

    return Published({"components": {"schemas": schemas.components()}},
                     {k: schemas.event_schema(k) for k in schemas.EVENT_MODELS})


def fetch(base_url: str) -> Published:
    """What a running server publishes: /openapi.json and each event schema listed under /v1/schemas/events."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=30) as c:
        index = c.get("/v1/schemas/events").json()
        events = {k: c.get(url).json() for k, url in index["events"].items()}
        return Published(c.get("/openapi.json").json(), events)
