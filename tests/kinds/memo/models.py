"""Input and result of the memo test kind."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MemoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=100)
    # The text inline, or (once the controller moved a large one to the store) its URI.
    text: str | None = None
    text_uri: str | None = None

    @model_validator(mode="after")
    def _one_text(self) -> MemoInput:
        if (self.text is None) == (self.text_uri is None):
            raise ValueError("give text or text_uri (not both)")
        return self


class MemoResult(BaseModel):
    title: str
    chars: int
    text_uri: str | None
