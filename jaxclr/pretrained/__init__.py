"""Released checkpoints in and out: reading them, jaxclr runs made from them, the load-and-encode API, export.

    sources.py     which format a path is (HF directory, OpenAI/open_clip state dict, big_vision npz),
                   its tensors converted (jaxclr.models.convert), its preprocessing and tokenizer
    import_run.py  a converted checkpoint as a run: config, params in the model's layout, run directory
    api.py         `jaxclr.load(RUN_OR_SOURCE)` -> Model (encode_image, encode_text, zero_shot, ...)
    export_hf.py   a run as a Hugging Face CLIPModel / SiglipModel directory
    classify.py    `python -m jaxclr.classify`: zero-shot labels for a folder of images

Imports the trainer's parts (state, checkpoints, run_info) and everything below them; the entry
points (jaxclr.import_weights, jaxclr.export, jaxclr.classify) and jaxclr.load sit above.
"""
