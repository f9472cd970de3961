"""The OAuth2 providers gql-mail knows: endpoints, scopes and mail servers, in one table.

An OAuth2 app (services/oauth2_apps.py) names one of these; its own `tokenUrl`/`authorizeUrl` override the
table's (a sovereign cloud, a test's local endpoint), and the `generic` provider has no endpoints of its own,
so an app of it must give both. The SMTP and IMAP servers here are where an account of the provider logs in
with XOAUTH2 unless its own `smtp`/`imap` blocks say otherwise (EmailEngine's lib/oauth2-apps.js table).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROVIDERS", "MailServer", "Provider", "provider"]


@dataclass(frozen=True)
class MailServer:
    host: str
    port: int
    secure: bool  # implicit TLS; False: STARTTLS


@dataclass(frozen=True)
class Provider:
    name: str
    # `{authority}` is the app's tenant (Microsoft: common, organizations, consumers or a tenant id).
    token_url: str | None
    authorize_url: str | None
    # What XOAUTH2 over IMAP and SMTP needs (EmailEngine's `baseScopes: imap`).
    scopes: tuple[str, ...]
    smtp: MailServer | None
    imap: MailServer | None
    default_authority: str | None = None

    def token_endpoint(self, authority: str | None) -> str | None:
        if self.token_url is None:
            return None
        return self.token_url.format(authority=authority or self.default_authority or "")

    def authorize_endpoint(self, authority: str | None) -> str | None:
        if self.authorize_url is None:
            return None
        return self.authorize_url.format(authority=authority or self.default_authority or "")


PROVIDERS: dict[str, Provider] = {
    "gmail": Provider(
        name="gmail",
        token_url="https://oauth2.googleapis.com/token",
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        scopes=("https://mail.google.com/",),
        smtp=MailServer("smtp.gmail.com", 465, secure=True),
        imap=MailServer("imap.gmail.com", 993, secure=True),
    ),
    "outlook": Provider(
        name="outlook",
        token_url="https://login.microsoftonline.com/{authority}/oauth2/v2.0/token",
        authorize_url="https://login.microsoftonline.com/{authority}/oauth2/v2.0/authorize",
        scopes=(
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
        ),
        smtp=MailServer("smtp.office365.com", 587, secure=False),
        imap=MailServer("outlook.office365.com", 993, secure=True),
        default_authority="common",
    ),
    # Any other OAuth2 server: the app gives tokenUrl and authorizeUrl, accounts give their mail servers.
    "generic": Provider(name="generic", token_url=None, authorize_url=None, scopes=(), smtp=None, imap=None),
}


def provider(name: str) -> Provider | None:
    return PROVIDERS.get(name)
