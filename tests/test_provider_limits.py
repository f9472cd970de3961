"""Provider presets: chosen by SMTP host (for Google, also by email domain); an account's own limits win."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from gql_mail.provider_limits import PRESETS, Limits, preset_for
from gql_mail.services.pacing import rule_of


@pytest.mark.parametrize(
    ("host", "email", "name"),
    [
        ("smtp.gmail.com", "me@gmail.com", "gmail"),
        ("smtp.gmail.com", "me@company.example", "google-workspace"),
        ("SMTP.Office365.com", "me@company.example", "microsoft-365"),
        ("company-example.mail.protection.outlook.com", "me@company.example", "microsoft-365"),
        ("smtp-mail.outlook.com", "me@outlook.com", "outlook.com"),
        ("smtp.mail.yahoo.com", "me@yahoo.com", "yahoo"),
        ("smtp.mail.me.com", "me@icloud.com", "icloud"),
        ("smtp.zoho.eu", "me@zoho.eu", "zoho"),
        ("smtp.fastmail.com", "me@fastmail.com", "fastmail"),
    ],
)
def test_presets_by_host(host: str, email: str, name: str) -> None:
    preset = preset_for(host, email)
    assert preset is not None and preset.name == name


@pytest.mark.parametrize(
    ("provider", "email", "name"),
    [
        ("gmail", "me@gmail.com", "gmail"),
        ("gmail", "me@company.example", "google-workspace"),
        ("outlook", "me@hotmail.com", "outlook.com"),
        ("outlook", "me@company.example", "microsoft-365"),
    ],
)
def test_an_oauth2_provider_picks_the_preset_whatever_the_host(provider: str, email: str, name: str) -> None:
    preset = preset_for("relay.company.example", email, provider)
    assert preset is not None and preset.name == name
    assert preset_for("relay.company.example", email, "generic") is None


def test_unknown_hosts_have_no_preset() -> None:
    assert preset_for("127.0.0.1", "me@example.org") is None
    assert preset_for("mail.gmail.com.evil.example", "me@gmail.com") is None


def test_every_preset_limits_something() -> None:
    assert all(not p.limits.empty for p in PRESETS)
    assert len({p.name for p in PRESETS}) == len(PRESETS)


def _pacing(**limits: int | None) -> SimpleNamespace:
    values: dict[str, int | None] = dict.fromkeys(
        ("per_minute", "per_hour", "per_day", "recipients_per_day", "max_connections")
    )
    values.update(limits)
    return SimpleNamespace(
        **values, throttled_until=None, throttle_reason=None, throttle_level=0, ramp_up=False
    )


def test_own_limits_win_over_the_preset() -> None:
    preset = rule_of("smtp.office365.com", "me@company.example", None)
    assert preset.preset == "microsoft-365" and preset.limits.per_minute == 30
    own = rule_of("smtp.office365.com", "me@company.example", _pacing(per_minute=5))
    assert own.preset is None and own.limits == Limits(per_minute=5)
    cleared = rule_of("smtp.office365.com", "me@company.example", _pacing())
    assert cleared.preset == "microsoft-365"


def test_ramp_up_starts_small_and_doubles_daily() -> None:
    warming = SimpleNamespace(**{**vars(_pacing()), "ramp_up": True})
    per_day = [
        rule_of("smtp.mail.me.com", "me@icloud.com", warming, age=timedelta(days=d)).limits.per_day
        for d in range(6)
    ]
    assert per_day == [62, 125, 250, 500, 1000, 1000]
    own = SimpleNamespace(**{**vars(_pacing(per_minute=3)), "ramp_up": True})
    assert rule_of("127.0.0.1", "me@example.org", own).limits.per_minute == 1  # never below 1
