"""`python -m runner.report`: runner/cli/report.py."""

from runner.cli.report import entry

if __name__ == "__main__":
    entry()
