"""`python -m jaxclr.data.prepare`: your images and captions -> a TFDS array_record dataset."""
from jaxclr.data.prepare.convert import cli

cli()
