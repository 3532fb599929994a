"""`python -m drconv`: the same as the `drconv` command."""

from drconv.cli import main

main()
