"""`python -m jaxclr.aggregate`: mean +- std of finished runs' final metrics (jaxclr.research.aggregate)."""
from jaxclr.research.aggregate import cli

if __name__ == "__main__":
    cli()
