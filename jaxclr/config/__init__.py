"""Config files: loading `path:preset`, command-line overrides, one-line usage errors, saved configs.

    load.py     load a config file, check `--config.KEY=` overrides, `exit_with_errors`, flatten to JSON
    values.py   values typed from the command line as `--config.KEY=TEXT` types them (sweep grids, evaluate)
    report.py   the problem report that whole-config validation fills (jaxclr.trainer.validate)
    saved.py    a run directory's saved config brought up to today's keys
    choices.py  names and defaults config files share with the code (loss terms, block size)

A foundation: imports nothing of jaxclr outside this folder, and never JAX. The checks of a whole
config's values need every layer above (models, data, evals, the trainer), so they live in
`jaxclr.trainer.validate`.
"""
from jaxclr.config.load import (
    check_overrides,
    exit_with_errors,
    flat_keys,
    flatten,
    load,
    load_module,
    override_problems,
    sibling,
    to_json,
    unknown_key_message,
)

__all__ = ["check_overrides", "exit_with_errors", "flat_keys", "flatten", "load", "load_module",
           "override_problems", "sibling", "to_json", "unknown_key_message"]
