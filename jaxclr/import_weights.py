"""`python -m jaxclr.import_weights`: a released CLIP/SigLIP checkpoint as a jaxclr run (jaxclr.pretrained.cli)."""
from jaxclr.pretrained.cli import import_cli

if __name__ == "__main__":
    import_cli()
