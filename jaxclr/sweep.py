"""`python -m jaxclr.sweep`: run, resume and tabulate a grid of config ablations (jaxclr.research.sweep)."""
from jaxclr.research.sweep import cli

if __name__ == "__main__":
    cli()
