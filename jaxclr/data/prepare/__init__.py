"""Importing your data: images + captions -> a TFDS array_record dataset read by name.

    convert.py  `python -m jaxclr.data.prepare`: the flags, the local path's shard loop
    plan.py     what both paths share: options, features, the split by key hash, the report
    beam_pipeline.py  the same dataset written by an Apache Beam pipeline (--runner=...)
    sources.py  the inputs: CSV/JSONL manifests, webdataset tar shards, class folders
    images.py   decoding, resizing and re-encoding one image
    writer.py   array_record shards, their reports, and the TFDS metadata

May import jaxclr.data's datasets, config and paths.
"""
