"""Does an answer match its contract model exactly: every required field, nothing undocumented?"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def undocumented(model: BaseModel, path: str = "") -> list[str]:
    """The fields of a validated answer (and of its nested answers) that no model declares."""
    found = [f"{path}{name}" for name in (model.__pydantic_extra__ or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        children = (
            value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
        )
        for child in children:
            if isinstance(child, BaseModel):
                found += undocumented(child, f"{path}{name}.")
    return found


def conforms(model: type[BaseModel], body: Any) -> BaseModel:
    """`body` validated by `model`, asserting it carries no undocumented field."""
    parsed = model.model_validate(body)
    assert undocumented(parsed) == [], (model.__name__, undocumented(parsed), body)
    return parsed
