"""`stratos`, the one console script: `main` builds the typer app from the verbs each part
registers (`infra/<part>/cli.py`), `common` holds what those verbs share (the console, logging,
the Kafka bootstrap check, the part's heartbeats). `python -m infra.cli` runs it too."""
