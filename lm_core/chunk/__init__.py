"""Chunk: split token documents into train/validation, cut from training what evaluation sets
hold, and pack them into fixed blocks.

    decontaminate.py  cut out of training documents every passage an evaluation set holds
    pack.py           documents -> fixed blocks, in content-defined groups
    stage.py          the `chunk` artifact: fingerprint, splits, blocks

    from lm_core.chunk.stage import run_chunk
"""
