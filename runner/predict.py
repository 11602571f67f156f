"""`python -m runner.predict`: runner/cli/predict.py."""

from runner.cli.predict import entry

if __name__ == "__main__":
    entry()
