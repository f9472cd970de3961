"""Published sending limits of the big mailbox providers, chosen by the OAuth2 provider or the SMTP host.

A mailbox that bursts past its provider's limit is blocked for up to a day, so an account that sets no
limits of its own is paced by its provider's published figures (services/pacing.py applies them). One
table, each figure with its source; a figure the provider does not publish is None (no limit from us), never
a guess. Figures are as published on the cited pages when this table was written (December 2026); providers
change them, so check the page when one looks wrong.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Sending limits of one account; None: no limit in that dimension."""

    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    recipients_per_day: int | None = None
    max_connections: int | None = None
    # Warm-up: a new account starts at a fraction of these and doubles daily (services/pacing.py `ramped`).
    ramp_up: bool = False

    @property
    def empty(self) -> bool:
        return all(
            value is None for value in (self.per_minute, self.per_hour, self.per_day, self.recipients_per_day)
        ) and (self.max_connections is None)


@dataclass(frozen=True)
class Preset:
    name: str  # shown as `limits.preset`
    hosts: tuple[str, ...]  # SMTP hosts, lower case; a leading "." matches any subdomain
    limits: Limits
    # Email domains that pick this preset over another one with the same host (Gmail vs Workspace).
    domains: tuple[str, ...] = ()


PRESETS: tuple[Preset, ...] = (
    # Gmail (consumer): "500 recipients per day" for mail sent through SMTP/clients by free accounts.
    # Source: https://support.google.com/mail/answer/22839 (Gmail sending limits). No per-minute figure is
    # published; 20 a minute keeps a burst of 500 from going out in seconds (Google's "unusual rate" 4.7.28
    # replies follow bursts), and is ours, not Google's.
    Preset(
        "gmail",
        ("smtp.gmail.com", "smtp.googlemail.com"),
        Limits(per_minute=20, per_day=500, recipients_per_day=500),
        domains=("gmail.com", "googlemail.com"),
    ),
    # Google Workspace: 2,000 messages per day per user, 10,000 total recipients per day.
    # Source: https://support.google.com/a/answer/166852 (Gmail sending limits in Google Workspace).
    Preset(
        "google-workspace",
        ("smtp.gmail.com", "smtp-relay.gmail.com", "smtp.googlemail.com"),
        Limits(per_minute=60, per_day=2_000, recipients_per_day=10_000),
    ),
    # Microsoft 365 / Exchange Online: 30 messages per minute (message rate limit), 10,000 recipients per
    # day (recipient rate limit), 3 concurrent SMTP AUTH connections ("432 4.3.2 ... thread limit exceeded").
    # Source: https://learn.microsoft.com/office365/servicedescriptions/exchange-online-service-description/
    # exchange-online-limits#sending-limits
    Preset(
        "microsoft-365",
        ("smtp.office365.com", ".mail.protection.outlook.com"),
        Limits(per_minute=30, recipients_per_day=10_000, max_connections=3),
    ),
    # Outlook.com (consumer): 5,000 recipients per day, 500 per message; no per-minute figure is published
    # for consumer accounts, and Exchange Online's 30 a minute (above) is used, as they share the platform.
    # Source: https://support.microsoft.com/office/sending-limits-in-outlook-com-279ee200-594c-40f0-9ec8-bb6af7735c2e
    Preset(
        "outlook.com",
        ("smtp-mail.outlook.com", "smtp.live.com", "smtp.outlook.com"),
        Limits(per_minute=30, recipients_per_day=5_000),
    ),
    # Yahoo Mail: Yahoo publishes no figure ("sending limits ... vary"); 500 messages per day is the limit
    # its help pages' daily-limit error (554 5.7.0 / "sending limit exceeded") is commonly reported at.
    # Source: https://help.yahoo.com/kb/SLN3353.html (temporary sending limits). Per day only.
    Preset("yahoo", ("smtp.mail.yahoo.com", "smtp.bizmail.yahoo.com"), Limits(per_day=500)),
    # iCloud Mail: 1,000 messages per day, 1,000 recipients per day, 500 recipients per message.
    # Source: https://support.apple.com/102198 (iCloud Mail storage and sending limits).
    Preset("icloud", ("smtp.mail.me.com",), Limits(per_day=1_000, recipients_per_day=1_000)),
    # Zoho Mail: paid plans may send to 500 recipients per day (free: 50) until Zoho raises the account.
    # Source: https://www.zoho.com/mail/help/adminconsole/email-sending-limit.html
    Preset(
        "zoho",
        ("smtp.zoho.com", "smtp.zoho.eu", "smtp.zoho.in", "smtp.zoho.com.au", "smtppro.zoho.com"),
        Limits(recipients_per_day=500),
    ),
    # Fastmail: 8,000 recipients per day and 2,000 per hour on the Standard plan.
    # Source: https://www.fastmail.help/hc/en-us/articles/1500000277382 (Account limits: sending).
    Preset("fastmail", ("smtp.fastmail.com",), Limits(per_hour=2_000, recipients_per_day=8_000)),
)


def _matches(host: str, pattern: str) -> bool:
    return host.endswith(pattern) if pattern.startswith(".") else host == pattern


# The presets an OAuth2 provider (oauth2_providers.py) picks among, whatever SMTP host the account names: the
# first whose domains include the email's, else the last (the business service).
_BY_OAUTH2_PROVIDER = {"gmail": ("gmail", "google-workspace"), "outlook": ("outlook.com", "microsoft-365")}
# Microsoft's consumer mailboxes (Outlook.com), as against Microsoft 365 tenants' own domains.
_OUTLOOK_COM_DOMAINS = ("outlook.com", "hotmail.com", "live.com", "msn.com", "passport.com")


def preset_for(smtp_host: str, email: str = "", oauth2_provider: str | None = None) -> Preset | None:
    """The provider preset of an account: by its OAuth2 provider when it signs in with one (its mailbox is
    at that provider even behind a relay or a custom host), else by its SMTP host (the first preset whose
    domains, if it has any, include the email's)."""
    domain = email.rpartition("@")[2].lower()
    if oauth2_provider in _BY_OAUTH2_PROVIDER:
        *consumer, business = (_NAMED[name] for name in _BY_OAUTH2_PROVIDER[oauth2_provider])
        return next((p for p in consumer if domain in _domains(p)), business)
    host = smtp_host.strip().lower().rstrip(".")
    for preset in PRESETS:
        if not any(_matches(host, pattern) for pattern in preset.hosts):
            continue
        if preset.domains and domain not in preset.domains:
            continue
        return preset
    return None


def _domains(preset: Preset) -> tuple[str, ...]:
    return _OUTLOOK_COM_DOMAINS if preset.name == "outlook.com" else preset.domains


_NAMED = {preset.name: preset for preset in PRESETS}
