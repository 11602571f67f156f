"""`python -m runner.sync`: runner/cli/sync.py."""

from runner.cli.sync import entry

if __name__ == "__main__":
    entry()
