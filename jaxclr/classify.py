"""`python -m jaxclr.classify`: zero-shot labels for a folder of images (jaxclr.pretrained.cli)."""
from jaxclr.pretrained.cli import classify_cli

if __name__ == "__main__":
    classify_cli()
