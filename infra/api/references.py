"""The rules of references between definitions, over a read model: what a definition names
must exist, and a definition others name cannot be removed. The REST routes and the node's
check of commands from Kafka clients (`infra.auth.gate`) both apply them."""

from __future__ import annotations

from schemas.definitions import Application, CartridgeGroup, RegisteredDefinition


def missing_references(read_model, tenant: str, definition: RegisteredDefinition) -> list[str]:
    """The definitions `definition` uses that do not exist in `tenant`.

    Groups nested inside a registered group (or inside this one) are defined inline, as in Stratos.
    """
    groups = [CartridgeGroup.model_validate(s.definition) for s in read_model.all(tenant, "cartridgeGroup")]
    if isinstance(definition, CartridgeGroup):
        groups.append(definition)
    inline = {nested.name for group in groups for nested in list(group.walk())[1:]}
    return [
        f"{kind} '{id}'"
        for kind, id in definition.references()
        if read_model.get(tenant, kind, id) is None and not (kind == "cartridgeGroup" and id in inline)
    ]


def reference_problem(read_model, tenant: str, kind: str, definition: RegisteredDefinition) -> str | None:
    """Why Stratos refuses this definition (it names unknown definitions, or its groups'
    dependencies do not hold), or None."""
    missing = missing_references(read_model, tenant, definition)
    if missing:
        return f"{kind} '{definition.definition_id}' uses {', '.join(missing)}, which does not exist"
    if isinstance(definition, Application):
        groups = {
            s.definition["name"]: CartridgeGroup.model_validate(s.definition)
            for s in read_model.all(tenant, "cartridgeGroup")
        }
        if problems := definition.group_dependency_errors(groups):
            return "; ".join(problems)
    return None


def in_use_problem(read_model, tenant: str, kind: str, id: str) -> str | None:
    """Why the definition cannot be removed (other definitions name it), or None."""
    if users := read_model.referrers(tenant, kind, id):
        return f"{kind} '{id}' is in use by {', '.join(users)}"
    return None
