"""`python -m runner.preview`: runner/cli/preview.py."""

from runner.cli.preview import entry

if __name__ == "__main__":
    entry()
