"""The REST API (Stratos 4.1 paths and codes) over the command log and the events read model."""
from infra.api.app import ConfigurationError, create_app

__all__ = ["ConfigurationError", "create_app"]
