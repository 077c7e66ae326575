"""The REST API (Stratos 4.1 paths and codes) over the command log and the events read model:
the app (`app.create_app`), its routes by resource, the web console (`console`), the metadata
service; `stratos api` (`cli`) and the Stratos verbs as its clients (`client_cli`,
`metadata_cli`). Importing this package loads nothing: the CLI imports its verbs without FastAPI."""
