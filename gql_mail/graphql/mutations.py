"""Write operations; each needs a token with scope "api"."""

from __future__ import annotations

import strawberry

from gql_mail.graphql.context import Info
from gql_mail.graphql.inputs import (
    OAuth2AppInput,
    RegisterAccountInput,
    SubmitMessageInput,
    UpdateAccountInput,
    WebhookInput,
)
from gql_mail.graphql.permissions import CanWrite
from gql_mail.graphql.types import (
    Account,
    OAuth2App,
    OutboxMessage,
    PreviewMessageResult,
    SubmitMessageResult,
    Webhook,
)
from gql_mail.services import accounts, oauth2_apps, outbox, pacing, webhooks
from gql_mail.services.accounts import AccountPatch


@strawberry.type
class Mutation:
    @strawberry.mutation(
        permission_classes=[CanWrite],
        description="Answers {account, state: NEW} at once; the connection check runs in the background.",
    )
    async def register_account(self, info: Info, input: RegisterAccountInput) -> Account:
        rt = info.context.runtime
        limits = input.limits.to_limits() if input.limits else None  # checked before anything is stored
        row = await accounts.register_account(rt, input.to_spec())
        if limits is not None:
            await pacing.set_limits(rt, row.id, limits)
        return Account.from_row(row)

    @strawberry.mutation(
        permission_classes=[CanWrite], description="Change settings; checks the account again."
    )
    async def update_account(self, info: Info, account: strawberry.ID, input: UpdateAccountInput) -> Account:
        rt = info.context.runtime
        limits = input.limits.to_limits() if input.limits else None
        if limits is not None and input.to_patch() == AccountPatch():
            # Only the limits changed: the account's connection is not checked again.
            await pacing.set_limits(rt, str(account), limits)
            return Account.from_row(await accounts.get_account(rt, str(account)))
        row = await accounts.update_account(rt, str(account), input.to_patch())
        if limits is not None:
            await pacing.set_limits(rt, row.id, limits)
        return Account.from_row(row)

    @strawberry.mutation(
        permission_classes=[CanWrite], description="Check the account's connection again now."
    )
    async def reconnect_account(self, info: Info, account: strawberry.ID) -> Account:
        return Account.from_row(await accounts.reconnect_account(info.context.runtime, str(account)))

    @strawberry.mutation(
        permission_classes=[CanWrite], description="Delete an account and its queued messages."
    )
    async def delete_account(self, info: Info, account: strawberry.ID) -> bool:
        return await accounts.delete_account(info.context.runtime, str(account))

    @strawberry.mutation(permission_classes=[CanWrite], description='Answers response "Queued for delivery".')
    async def submit_message(
        self, info: Info, account: strawberry.ID, input: SubmitMessageInput
    ) -> SubmitMessageResult:
        result = await outbox.submit_message(info.context.runtime, str(account), input.to_spec())
        return SubmitMessageResult.from_result(result)

    @strawberry.mutation(
        permission_classes=[CanWrite],
        description=(
            "EmailEngine's dryRun: composes the message exactly as submitMessage would, with the same checks "
            'and errors, and queues and stores nothing. Answers response "Dry run".'
        ),
    )
    async def preview_message(
        self, info: Info, account: strawberry.ID, input: SubmitMessageInput
    ) -> PreviewMessageResult:
        result = await outbox.preview_message(info.context.runtime, str(account), input.to_spec())
        return PreviewMessageResult.from_result(result)

    @strawberry.mutation(
        permission_classes=[CanWrite],
        description="Removes a queued message; false when it is already being sent or has finished.",
    )
    async def cancel_message(self, info: Info, queue_id: strawberry.ID) -> bool:
        return await outbox.cancel_message(info.context.runtime, str(queue_id))

    @strawberry.mutation(
        permission_classes=[CanWrite],
        description="Queues a failed message again, due now, with a fresh attempt budget. CONFLICT when it "
        "is not failed, or its body is no longer stored (then submit it again); NOT_FOUND for an unknown id.",
    )
    async def retry_message(self, info: Info, queue_id: strawberry.ID) -> OutboxMessage:
        return OutboxMessage.from_row(await outbox.retry_message(info.context.runtime, str(queue_id)))

    @strawberry.mutation(permission_classes=[CanWrite])
    async def create_webhook(self, info: Info, input: WebhookInput) -> Webhook:
        return Webhook.from_row(await webhooks.create_webhook(info.context.runtime, input.to_spec()))

    @strawberry.mutation(permission_classes=[CanWrite])
    async def delete_webhook(self, info: Info, id: strawberry.ID) -> bool:
        return await webhooks.delete_webhook(info.context.runtime, str(id))

    @strawberry.mutation(
        permission_classes=[CanWrite],
        name="createOAuth2App",
        description="Register an OAuth2 application; OAuth2 accounts name its id as their provider.",
    )
    async def create_oauth2_app(self, info: Info, input: OAuth2AppInput) -> OAuth2App:
        return OAuth2App.from_row(await oauth2_apps.create_app(info.context.runtime, input.to_spec()))

    @strawberry.mutation(
        permission_classes=[CanWrite],
        name="deleteOAuth2App",
        description="Delete an OAuth2 application no account uses (CONFLICT otherwise).",
    )
    async def delete_oauth2_app(self, info: Info, id: strawberry.ID) -> bool:
        return await oauth2_apps.delete_app(info.context.runtime, str(id))
