"""CLIP's byte-level BPE caption tokenizer (data.tokenizer = 'clip_bpe'), for released CLIP models.

    tok = ClipBpeTokenizer('path/to/openai-clip-vit-b-32')   # a directory, tokenizer.json or vocab.json
    tok.encode('A photo of a cat.', 77)   # int32 [77]: [<|startoftext|>, ids..., <|endoftext|>, pad...]

What it reads (`find_files`): a directory holding tokenizer.json, else vocab.json + merges.txt; or one
file: vocab.json or merges.txt (the pair beside each other), or any other .json, read as a
tokenizer.json. A tokenizer.json is read with `tokenizers.Tokenizer` and its own pipeline is used (a
CLIP tokenizer.json holds the one below); for vocab.json + merges.txt the pipeline is built here, as
transformers' CLIPTokenizerFast builds it: a BPE model with CLIP's '</w>' end-of-word suffix;
normaliser NFC, every whitespace run -> one space, lower-case; CLIP's split regex, then byte level.
Either way the two special tokens are (re-)added as CLIPTokenizerFast adds them: matched in the text
as written, before normalising.

Special ids, from the vocabulary: bos = '<|startoftext|>', eos = '<|endoftext|>' (49406 and 49407 in
OpenAI's 49,408-token vocabulary); pad = the pad_token of special_tokens_map.json, else of
tokenizer_config.json, beside the files (transformers' precedence), else '<|endoftext|>' (what
CLIPTokenizerFast pads with; for OpenAI's files pad = eos).
A pad token other than those two becomes a special token, as in transformers: '!' (id 0, which some
released files pad with, as open_clip does) is then matched in the text as id 0, not BPE'd as '!</w>'.
A caption encodes to [bos, ids..., eos, pad...]; a longer one is cut so that eos sits at the last
position. The ids equal CLIPTokenizerFast's (padding='max_length', truncation=True): both run the same
`tokenizers` pipeline, and the special token strings in a caption are read as the special tokens, as
there. vocab_size is the vocabulary's size with the special tokens.

CLIP lower-cases (and NFC-normalises) every caption itself, so data.lowercase changes nothing here, and
jaxclr's own cleaning (`tokenizer.clean`: NFKC, strip) is not applied: the text goes to the pipeline as
it is. OpenAI's and open_clip's own tokenizers also run ftfy.fix_text and html.unescape first, which
CLIPTokenizerFast does not (docs/pretrained.md, "Tokenizers").

The loaded tokenizer is cached per path in each process; a ClipBpeTokenizer pickles as its path.
"""
from __future__ import annotations

import functools
import json
import os

import numpy as np
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HfTokenizer
from tokenizers.models import BPE

from jaxclr import paths
from jaxclr.data.text.tokenizer import Tokenizer, TokenizerError

SUFFIX = '</w>'
BOS_TOKEN, EOS_TOKEN = '<|startoftext|>', '<|endoftext|>'
# CLIP's split of lower-cased text (OpenAI's simple_tokenizer; transformers' CLIPTokenizerFast): the two
# special tokens, English contractions, letter runs, single digits, runs of anything else but whitespace.
SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# read for pad_token, in this order (transformers lets special_tokens_map.json override tokenizer_config.json)
CONFIG_FILES = ('special_tokens_map.json', 'tokenizer_config.json')
KEY = 'data.tokenizer_model'
HINT = ('set data.tokenizer_model to a released CLIP tokenizer: a directory with tokenizer.json or '
         'vocab.json + merges.txt, or one of those files')


def normalizer() -> normalizers.Normalizer:
    """CLIP's: NFC, every whitespace run -> one space, lower-case."""
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r'\s+'), ' '), normalizers.Lowercase()])


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """CLIP's: the pieces SPLIT matches (whitespace dropped), each written as byte-level characters.

    ByteLevel's own (GPT-2) split runs too, as in CLIPTokenizerFast; it splits no piece of SPLIT's.
    """
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(SPLIT), behavior='removed', invert=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])


def build(vocab: dict[str, int], merges: list[tuple[str, str]]) -> HfTokenizer:
    """The `tokenizers` pipeline of CLIP's vocab.json + merges.txt (contents), its two special tokens added."""
    model = HfTokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix='', end_of_word_suffix=SUFFIX,
                            unk_token=EOS_TOKEN, fuse_unk=False))
    model.normalizer = normalizer()
    model.pre_tokenizer = pre_tokenizer()
    model.decoder = decoders.ByteLevel()
    # matched in the raw text, before lower-casing, as CLIPTokenizerFast matches them
    model.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS_TOKEN, EOS_TOKEN)])
    return model


def find_files(path: str) -> tuple[str, ...]:
    """(tokenizer.json,) or (vocab.json, merges.txt) for `path` (a directory or one of those files)."""
    root = paths.resolve(path)
    if root.is_dir():
        if (root / 'tokenizer.json').exists():
            return (os.fspath(root / 'tokenizer.json'),)
        vocab = root / 'vocab.json'
    elif root.exists() and root.name.endswith('.json') and root.name != 'vocab.json':
        return (os.fspath(root),)
    elif root.exists():
        vocab = root.parent / 'vocab.json' if root.name == 'merges.txt' else root
    else:
        raise TokenizerError(KEY, f'{path} does not exist; {HINT}')
    merges = vocab.parent / 'merges.txt'
    missing = [os.fspath(f) for f in (vocab, merges) if not f.exists()]
    if missing:
        raise TokenizerError(KEY, f'{path}: no tokenizer.json, and {" and ".join(missing)} missing; {HINT}')
    return os.fspath(vocab), os.fspath(merges)


def _read_merges(text: str) -> list[tuple[str, str]]:
    """merges.txt: one 'a b' pair a line; the '#version' header and blank lines skipped."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith('#version')]
    return [tuple(line.split()) for line in lines]


def _pad_token(directory) -> str:
    """The pad_token of the first of CONFIG_FILES in `directory` that names one, else EOS_TOKEN."""
    for name in CONFIG_FILES:
        file = directory / name
        if file.exists():
            pad = json.loads(file.read_text()).get('pad_token')
            pad = pad.get('content') if isinstance(pad, dict) else pad   # an AddedToken written as a dict
            if pad:
                return str(pad)
    return EOS_TOKEN


def _require_specials(has, files) -> None:
    """TokenizerError unless has(BOS_TOKEN) and has(EOS_TOKEN)."""
    absent = [f'{token!r} ({name})' for name, token in (('bos', BOS_TOKEN), ('eos', EOS_TOKEN)) if not has(token)]
    if absent:
        raise TokenizerError(KEY, f'{", ".join(files)} has no {" or ".join(absent)} token; {HINT}')


@functools.lru_cache(maxsize=8)
def _load(path: str) -> tuple[HfTokenizer, dict[str, int]]:
    """(the tokenizer at `path`, its special ids {'bos', 'eos', 'pad'}), once per process."""
    files = find_files(path)
    try:
        if len(files) == 1:
            model = HfTokenizer.from_str(paths.resolve(files[0]).read_text())
            model.no_padding()
            model.no_truncation()
            if model.decoder is None:
                model.decoder = decoders.ByteLevel()
        else:
            vocab = json.loads(paths.resolve(files[0]).read_text())
            _require_specials(vocab.__contains__, files)   # before build adds them
            model = build(vocab, _read_merges(paths.resolve(files[1]).read_text()))
    except TokenizerError:
        raise
    except Exception as e:  # noqa: BLE001 - json / tokenizers raise many kinds on a bad file
        first = str(e).splitlines()[0] if str(e) else ''
        raise TokenizerError(KEY, f'{", ".join(files)}: not a CLIP tokenizer ({type(e).__name__}: {first}); '
                             f'{HINT}') from None
    _require_specials(lambda token: model.token_to_id(token) is not None, files)
    # (again, for a tokenizer.json: whatever its flags, matched as CLIPTokenizerFast matches them)
    model.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS_TOKEN, EOS_TOKEN)])
    pad = _pad_token(paths.resolve(files[0]).parent)
    if pad not in (BOS_TOKEN, EOS_TOKEN):   # as transformers: a special token, matched in the text (new if unknown)
        model.add_special_tokens([AddedToken(pad, special=True, normalized=False)])
    ids = {name: model.token_to_id(token) for name, token in (('bos', BOS_TOKEN), ('eos', EOS_TOKEN), ('pad', pad))}
    return model, ids


class ClipBpeTokenizer(Tokenizer):
    """CLIP's BPE of a released tokenizer; its own special ids (see the module docstring).

    Args:
      path: a directory with tokenizer.json or vocab.json + merges.txt, or one of those json files.
      lowercase: data.lowercase, kept for the record: CLIP lower-cases every caption whatever it is.
    """

    def __init__(self, path: str, lowercase: bool = False):
        super().__init__(lowercase)
        self.path = os.fspath(path)
        self._tok, ids = _load(self.path)
        self.bos_id, self.eos_id, self.pad_id = ids['bos'], ids['eos'], ids['pad']
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(self._tok.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1)

    def clean_text(self, text: str | bytes) -> str:
        """The text unchanged (bytes read as UTF-8): CLIP's normaliser does the rest."""
        return text.decode('utf-8', errors='replace') if isinstance(text, bytes) else text

    def ids(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32).reshape(-1)

    def not_text_ids(self) -> np.ndarray:
        """bos and eos, not pad: pad is eos, or a piece of text ('!', which some released files pad with)."""
        return np.asarray([self.bos_id, self.eos_id], np.int64)

    def decode_ids(self, ids: np.ndarray) -> str:
        """The words, each end of word read as a space (as CLIPTokenizerFast decodes)."""
        text = self._tok.decode(np.asarray(ids).astype(int).tolist(), skip_special_tokens=False)
        return text.replace(SUFFIX, ' ').strip()

    def __getstate__(self) -> dict:
        return {'path': self.path, 'lowercase': self.lowercase}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state['path'], state['lowercase'])

    def __repr__(self) -> str:
        return f'ClipBpeTokenizer({self.path!r})'
