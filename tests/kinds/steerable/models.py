"""Inputs, messages and answers of the steerable test kind."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SteerInput(_Strict):
    naps: int = Field(1, ge=1, le=100, description="how many durable naps the job takes")
    nap_s: float = Field(3600.0, gt=0, description="length of each nap; `finish` cuts it short")


class Nudge(_Strict):
    message: str = Field(min_length=1, max_length=200)


class Messages(_Strict):
    messages: list[str]


class SetLabel(_Strict):
    label: str = Field(min_length=1, max_length=50)


class LabelChanged(_Strict):
    previous: str
    current: str


class SteerResult(_Strict):
    messages: list[str]
    label: str
    naps_taken: int
    finished_early: bool
