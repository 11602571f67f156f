"""`python -m runner.evaluate`: runner/cli/evaluate.py."""

from runner.cli.evaluate import entry

if __name__ == "__main__":
    entry()
