"""`python -m jaxclr.data.train_tokenizer`: a SentencePiece model from captions (jaxclr.data.text.train)."""
from jaxclr.data.text.train import cli

if __name__ == "__main__":
    cli()
