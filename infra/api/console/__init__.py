"""The web console's page, script and style sheet, served by infra.api.console (no build step)."""
