"""The tools the API tests call (chat's nested form; `flat` gives the Responses API's)."""

from __future__ import annotations

from typing import Any


def _city_tool(name: str, description: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }


WEATHER = _city_tool("get_weather", "The weather in a city.")
TIME = _city_tool("get_time", "The local time in a city.")


def flat(tool: dict[str, Any]) -> dict[str, Any]:
    """A chat tool in the Responses API's flat form."""
    return {"type": "function", **tool["function"]}
