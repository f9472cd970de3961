"""Deployment-wide settings kept in the database; today the service secret.

The service secret is EmailEngine's `serviceSecret`: the key of `X-EE-Wh-Signature` on every webhook POST
whose webhook has no secret of its own (EmailEngine signs every webhook with it). Like EmailEngine's, it
is generated once (16 random bytes, hex: 32 characters), on first use, and can be replaced. It is stored
encrypted (`gql-mail rotate-secret` re-encrypts it with the other secrets), one row shared by every
process, so a receiver verifies POSTs from any node with one key.
"""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError

from gql_mail.models import ServiceSetting
from gql_mail.runtime import Runtime
from gql_mail.services import validation as v
from gql_mail.services.errors import BadInput

SERVICE_SECRET = "serviceSecret"
# A header-safe string, as a receiver's configuration holds it; EmailEngine's generated one is 32.
MIN_SERVICE_SECRET = 16
MAX_SERVICE_SECRET = 256


async def _stored(rt: Runtime, key: str) -> ServiceSetting | None:
    async with rt.db.read() as session:
        return await session.get(ServiceSetting, key)


async def service_secret(rt: Runtime) -> str:
    """The service secret, generated and stored the first time it is asked for.

    Two processes asking at once for the first time agree: the second insert fails on the primary key (or
    waits for the first, on SQLite) and reads the first one's value."""
    row = await _stored(rt, SERVICE_SECRET)
    if row is None or not row.value_enc:
        generated = secrets.token_hex(16)
        try:
            async with rt.db.write() as session:
                if (current := await session.get(ServiceSetting, SERVICE_SECRET)) is not None:
                    row = current
                else:
                    row = ServiceSetting(
                        key=SERVICE_SECRET,
                        value_enc=rt.secrets.encrypt(generated),
                        updated_at=rt.clock.now(),
                    )
                    session.add(row)
                    return generated
        except IntegrityError:
            row = await _stored(rt, SERVICE_SECRET)
        if row is None or not row.value_enc:
            raise RuntimeError("the service secret could not be stored")
    return rt.secrets.decrypt(row.value_enc)


def check_service_secret(value: str) -> str:
    """A service secret a receiver's configuration can hold, or BadInput (field `serviceSecret`)."""
    value = v.no_control_chars(value, SERVICE_SECRET, max_length=MAX_SERVICE_SECRET)
    if len(value) < MIN_SERVICE_SECRET:
        raise BadInput(
            f"{SERVICE_SECRET} must be at least {MIN_SERVICE_SECRET} characters", field=SERVICE_SECRET
        )
    return value


async def set_service_secret(rt: Runtime, value: str) -> None:
    """Replace the service secret (EmailEngine's `POST /v1/settings {serviceSecret}`); BadInput (field
    `serviceSecret`) for one shorter than 16 or longer than 256 characters or with control characters."""
    value = check_service_secret(value)
    async with rt.db.write() as session:
        row = await session.get(ServiceSetting, SERVICE_SECRET)
        if row is None:
            row = ServiceSetting(key=SERVICE_SECRET, updated_at=rt.clock.now())
            session.add(row)
        row.value_enc = rt.secrets.encrypt(value)
        row.updated_at = rt.clock.now()
