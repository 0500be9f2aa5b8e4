"""`python -m jaxclr.study`: a study's tables and verdicts from its results (jaxclr.research.study)."""
from jaxclr.research.study import cli

if __name__ == "__main__":
    cli()
