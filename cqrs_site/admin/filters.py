"""The change list's sidebar filters over MongoDB fields (as django.contrib.admin.filters)."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .changelist import ChangeList

# A condition that matches no document: what a filter that cannot be read selects.
MATCH_NOTHING = {"_id": {"$exists": False}}


@dataclass(frozen=True)
class Choice:
    display: str
    query_string: str
    selected: bool


class InvalidFilter(ValueError):
    """A filter parameter that cannot be read; the message says what to send instead."""


class ListFilter:
    """A sidebar filter: its parameters, its choices (links), and the MongoDB condition it adds."""

    title = ""
    parameters: tuple[str, ...] = ()
    form_fields: tuple[tuple[str, str, str], ...] = ()  # (parameter, label, input type) of a free-form input

    def choices(self, changelist: "ChangeList") -> list[Choice]:
        raise NotImplementedError

    def condition(self, values: dict[str, str]) -> dict:
        """The MongoDB condition for these parameter values; InvalidFilter when one is unreadable."""
        raise NotImplementedError


class ChoicesFilter(ListFilter):
    """One parameter, a few named choices; the first (no parameter) is the default."""

    def __init__(self, parameter: str, title: str, choices: list[tuple[str | None, str, dict]]) -> None:
        self.title, self.parameters, self._choices = title, (parameter,), choices

    def choices(self, changelist: "ChangeList") -> list[Choice]:
        current = changelist.params.get(self.parameters[0])
        return [
            Choice(display, changelist.query_string({self.parameters[0]: value}), value == current)
            for value, display, _condition in self._choices
        ]

    def condition(self, values: dict[str, str]) -> dict:
        current = values.get(self.parameters[0])
        for value, _display, condition in self._choices:
            if value == current:
                return condition
        raise InvalidFilter(f"{self.title}: {current!r} is not one of the choices.")


class DateRangeFilter(ListFilter):
    """Today, the past 7 days, this month, this year, or any range (`<field>__gte` / `__lt`)."""

    def __init__(self, field: str, title: str) -> None:
        self.field, self.title = field, title
        self.parameters = (f"{field}__gte", f"{field}__lt")
        self.form_fields = ((self.parameters[0], "From", "date"), (self.parameters[1], "Before", "date"))

    def presets(self) -> list[tuple[str, date | None, date | None]]:
        today = datetime.now(UTC).date()
        month = today.replace(day=1)
        return [
            ("Any date", None, None),
            ("Today", today, today + timedelta(days=1)),
            ("Past 7 days", today - timedelta(days=7), today + timedelta(days=1)),
            ("This month", month, (month + timedelta(days=32)).replace(day=1)),
            ("This year", today.replace(month=1, day=1), today.replace(year=today.year + 1, month=1, day=1)),
        ]

    def choices(self, changelist: "ChangeList") -> list[Choice]:
        since, before = (changelist.params.get(name) for name in self.parameters)
        result = []
        for display, start, end in self.presets():
            values = (start.isoformat() if start else None, end.isoformat() if end else None)
            query = changelist.query_string(dict(zip(self.parameters, values, strict=True)))
            result.append(Choice(display, query, values == (since, before)))
        return result

    def condition(self, values: dict[str, str]) -> dict:
        bounds = {}
        for operator, name in zip(("$gte", "$lt"), self.parameters, strict=True):
            if values.get(name):
                try:
                    day = date.fromisoformat(values[name])
                except ValueError:
                    raise InvalidFilter(f"{self.title}: {values[name]!r} is not a date (YYYY-MM-DD).") from None
                bounds[operator] = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return {self.field: bounds} if bounds else {}
