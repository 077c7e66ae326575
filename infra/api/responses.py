"""Stratos's ResponseMessageBean and the one write path: command -> reply -> visible in reads."""

from __future__ import annotations

import functools
from typing import Any, Literal

import anyio
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from infra.api.read_model import ReadModel
from infra.log.commands_client import CommandClient
from infra.settings import Settings
from schemas.base import masked
from schemas.status import CommandRejected


class MaskedJSONResponse(JSONResponse):
    """Every JSON answer of the API: a secret (sealed or clear) shows as "********"."""

    def render(self, content) -> bytes:
        return super().render(masked(content))


class ResponseMessage(BaseModel):
    """What every write and every error answers (Stratos clients show `message` to the user)."""

    status: Literal["success", "error"]
    message: str
    commandId: str | None = None


def answer(
    code: int,
    message: str,
    status: Literal["success", "error"] = "success",
    command_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    bean = ResponseMessage(status=status, message=message, commandId=command_id)
    return JSONResponse(bean.model_dump(exclude_none=True), status_code=code, headers=headers)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ResponseMessage, "description": why}
    for code, why in (
        (400, "invalid body, unknown reference, or in use"),
        (401, "no or wrong credentials"),
        (403, "the role does not allow it"),
        (404, "no such id in the caller's tenant"),
        (409, "the id exists already"),
    )
}


class Writer:
    """Sends a command for the caller's tenant and answers once its effect is readable."""

    def __init__(self, settings: Settings, commands: CommandClient, read_model: ReadModel) -> None:
        self.settings = settings
        self.commands = commands
        self.read_model = read_model

    async def write_async(
        self,
        aggregate_id: str,
        command: BaseModel,
        tenant: str,
        done: str,
        code: int = 200,
        wait: bool = True,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        """`wait=False` answers 202 with the command id as soon as the command is logged.
        Waiting holds no thread: the reply and the read model wake this request alone."""
        command_id = await self.commands.send_async(aggregate_id, command, tenant)
        if not wait:
            return answer(202, f"accepted for processing: {command.type}", command_id=command_id)  # type: ignore[attr-defined]
        timeout = self.settings.api_wait_seconds
        reply = await self.commands.wait_async(command_id, timeout)
        if reply is None:
            raise HTTPException(
                504, f"no reply to command {command_id} within {timeout:.0f}s; it is logged and may still take effect"
            )
        if isinstance(reply, CommandRejected):
            raise HTTPException(reply.code, reply.reason)
        await self.read_model.wait_for_command(command_id, len(reply.event_types), timeout)  # type: ignore[attr-defined]
        return answer(code, done, command_id=command_id, headers=headers)

    def write(
        self,
        aggregate_id: str,
        command: BaseModel,
        tenant: str,
        done: str,
        code: int = 200,
        wait: bool = True,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        """`write_async` for a sync route (on a worker thread): runs it on the event loop."""
        return anyio.from_thread.run(
            functools.partial(self.write_async, aggregate_id, command, tenant, done, code, wait, headers)
        )
