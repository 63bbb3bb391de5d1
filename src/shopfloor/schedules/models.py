"""Schedule files: `shopfloor schedule apply FILE` (YAML or JSON), `PUT /schedules`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

from shopfloor.durations import Duration
from shopfloor.inputs import StrictInput as _Strict

SCHEDULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*,/?#LW-]+$")
Overlap = Literal[
    "skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"
]


# Unknown fields are errors (a typo is not a default); NaN and Infinity are not numbers. (`_Strict`
# is an import alias: an assigned alias would hide the models' fields from mypy's pydantic plugin.)


class ScheduledJob(_Strict):
    """What each run starts: a job of any kind, with that kind's input."""

    kind: str
    input: dict[str, Any] = Field(default_factory=dict)


class ScheduleDefinition(_Strict):
    id: str = Field(pattern=SCHEDULE_ID)
    description: str = ""
    cron: list[str] = Field(min_length=1, max_length=20, description='e.g. "0 4 * * *"')
    timezone: str = Field("UTC", description="IANA name, e.g. Europe/Paris")
    job: ScheduledJob
    overlap: Overlap = Field("skip", description="what a run does when the last still runs")
    catchup_window: Duration = Field(
        timedelta(hours=1), description="runs missed while the server was down, up to this old"
    )
    jitter: Duration | None = None
    # Only when the schedule is created: later, pause/unpause (and the kill switch) own it.
    paused: bool = False

    @field_validator("cron", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("cron")
    @classmethod
    def _cron(cls, crons: list[str]) -> list[str]:
        for cron in crons:
            fields = cron.split()
            if cron.startswith("@"):
                continue
            if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
                raise ValueError(
                    f"invalid cron {cron!r}: five fields, minute hour day-of-month month "
                    'day-of-week (e.g. "0 4 * * *"), or @daily/@hourly/…'
                )
        return crons

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name: Europe/Paris)") from None
        return v

    @field_validator("catchup_window")
    @classmethod
    def _catchup(cls, v: timedelta) -> timedelta:
        if v < timedelta(seconds=10):
            raise ValueError("catchup_window must be at least 10s (Temporal's minimum)")
        return v


class ScheduleFile(_Strict):
    schedules: list[ScheduleDefinition] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _unique(self) -> ScheduleFile:
        ids = [s.id for s in self.schedules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate schedule ids: {dupes}")
        return self


class Applied(BaseModel):
    id: str
    action: Literal["created", "updated", "unchanged", "deleted", "left alone"]


class RecentRun(BaseModel):
    job_id: str
    scheduled_at: datetime
    started_at: datetime
    status: str | None = None


class ScheduleView(BaseModel):
    id: str
    kind: str | None
    cron: list[str]
    timezone: str | None
    overlap: str
    paused: bool
    note: str | None
    next_runs: list[datetime]
    recent_runs: list[RecentRun] = []
    runs_total: int = 0
    managed: bool = Field(description="created by `schedule apply` (a --prune may delete it)")


class Triggered(BaseModel):
    """What `trigger` did, under which overlap policy."""

    schedule: str
    status: Literal["TRIGGERED", "SKIPPED", "BUFFERED"]
    overlap: str = Field(description="the policy this trigger ran under")
    overridden: bool = Field(description="an --overlap given for this trigger, not the schedule's")
    running: list[str] = Field(description="jobs of the schedule still running when triggered")
    message: str


class PauseRequest(_Strict):
    note: str = Field("", max_length=500)


class BackfillRequest(_Strict):
    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _order(self) -> BackfillRequest:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("give start and end with a time zone, e.g. 2026-01-01T00:00:00Z")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class KillSwitchRequest(_Strict):
    reason: str = Field(min_length=1, max_length=500)
