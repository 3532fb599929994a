"""`python -m drconv`: the same as the `drconv` command."""

from drconv._entry import main

main()
