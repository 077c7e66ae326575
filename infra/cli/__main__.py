"""`python -m infra.cli ...`: the `stratos` console script."""

from infra.cli.main import main

main()
