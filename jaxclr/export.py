"""`python -m jaxclr.export`: a run as a Hugging Face CLIPModel / SiglipModel directory (jaxclr.pretrained.cli)."""
from jaxclr.pretrained.cli import export_cli

if __name__ == "__main__":
    export_cli()
