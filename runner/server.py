"""`python -m runner.server`: runner/cli/server.py."""

from runner.cli.server import entry

if __name__ == "__main__":
    entry()
