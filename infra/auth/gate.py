"""The node's check of who sent each command, before any actor sees it.

The platform's own parts sign theirs (`infra.auth.signing`); a Kafka client's command carries a
tenant user's bearer token (`stratos-token` header) and is allowed exactly when the REST call
it mirrors would be (`infra.auth.access.command_denied`, then the routes' reference rules of
`infra.api.references`). Anything else is refused with 401/403 (400 for a reference) in its
reply, and dead-lettered with the same reason: it never reaches its aggregate.
"""

from __future__ import annotations

import logging

from infra.auth.access import SIGNUP_COMMANDS, TokenRefused, Tokens, command_denied
from infra.auth.secrets import secret_box
from infra.auth.signing import MEMBER, PLATFORM, TOKEN, Verifier, platform_secret
from infra.log.kafka import Delivered
from infra.settings import Settings
from schemas.definitions import DEFINITION_KINDS
from schemas.ids import parse_aggregate_id

log = logging.getLogger(__name__)
READ_MODEL_WAIT_SECONDS = 8.0
"""How long the first token-bearing command waits for the definitions to be read (below
the group's 10 s poll interval: the node's loop waits meanwhile)."""


class CommandGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verifier = Verifier.of(settings)
        self.tokens: Tokens | None = None

    def start(self) -> None:
        """Follow the definitions from the log (users and tenants decide whether a token is
        good; the rest, the reference rules), from the first command that carries a token on:
        most commands are the platform's. Clusters, the bulk of the log, are not folded."""
        from infra.api.read_model import ReadModel

        model = ReadModel(self.settings, kinds=set(DEFINITION_KINDS))
        model.thread.start()
        # the bootstrap admin's password is the API's alone (`stratos up` gives it no other part):
        # without it, the admin's tokens are checked by their platform-keyed mac and expiry
        password = self.settings.admin_password.get_secret_value() if self.settings.admin_password else None
        self.tokens = Tokens(
            platform_secret(self.settings),
            model,
            self.settings.admin_username,
            password,
            self.settings.token_ttl_seconds,
            open_secret=secret_box(self.settings).open,
        )

    def stop(self) -> None:
        if self.tokens is not None:
            self.tokens.read_model.stop()

    def refused(self, delivered: Delivered) -> tuple[int, str] | None:
        """(code, reason) when this command may not reach its aggregate; None when it may."""
        sender = delivered.sender
        if sender is None or sender.kind == PLATFORM:
            return None
        if sender.kind == MEMBER:
            return 403, f"member {sender.member_id!r} may not send commands"
        if sender.kind != "token" or not sender.token:
            return 401, (
                f"unauthenticated command: a {TOKEN} header with a bearer token from POST /api/token is required"
            )
        if self.tokens is None:
            self.start()
        assert self.tokens is not None
        if not self.tokens.read_model.ready.wait(READ_MODEL_WAIT_SECONDS):
            return 503, "this node has not read the users and tenants yet: send the command again"
        try:
            principal = self.tokens.principal(sender.token)
        except TokenRefused as exc:
            return 401, str(exc)
        command = delivered.record
        ref = parse_aggregate_id(command.aggregate_id)
        if command.tenant != ref.tenant and command.payload.type not in SIGNUP_COMMANDS:  # type: ignore[attr-defined]
            return 403, f"envelope tenant {command.tenant!r} is not the aggregate's tenant {ref.tenant!r}"
        if (denied := command_denied(principal, ref, command.payload)) is not None:
            return denied
        return self._references(ref, command.payload)

    def _references(self, ref, payload) -> tuple[int, str] | None:
        """The REST routes' reference rules: what a definition names exists; a definition
        others name is not removed (400, the same sentence)."""
        from infra.api.references import in_use_problem, reference_problem  # infra.api imports the node

        model = self.tokens.read_model  # type: ignore[union-attr]
        if ref.kind not in DEFINITION_KINDS:
            return None
        if (body := getattr(payload, "definition", None)) is not None:
            problem = reference_problem(model, ref.tenant, ref.kind, body)
        elif payload.type.startswith("Remove"):
            problem = in_use_problem(model, ref.tenant, ref.kind, ref.id)
        else:
            return None
        return (400, problem) if problem else None
