"""`python -m kizashi ...`: the same command as the `kizashi` script."""

from kizashi.cli import app

if __name__ == "__main__":
    app(prog_name="kizashi")
