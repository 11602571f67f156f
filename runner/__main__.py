"""`python -m runner [group=option ...] [key=value ...]`: runner/cli/train.py."""

from runner.cli.train import entry

if __name__ == "__main__":
    entry()
