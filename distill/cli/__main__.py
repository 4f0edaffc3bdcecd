"""`python -m distill.cli`."""

from distill.cli.app import main

main()
