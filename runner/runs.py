"""`python -m runner.runs`: runner/cli/runs.py."""

from runner.cli.runs import entry

if __name__ == "__main__":
    entry()
