"""`python -m jaxclr.plan`: the train step compiled by XLA:TPU for a TPU topology on a CPU (jaxclr.bench.plan)."""
from jaxclr.bench.plan import cli

if __name__ == "__main__":
    cli()
