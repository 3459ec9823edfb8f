"""`python -m dialer` runs the `dialer` command (used for child processes)."""

from dialer.cli import main

main()
