"""The peers of `bench/quality_budget.py`: nanoGPT and nanochat, each at a pinned commit.

source.py         where a peer's work tree comes from (its pinned commit, in ~/.cache/lmforge-bench/peers/)
common.py         the footing all systems share (Setup), a trained system (Trained), running a peer's script
nanogpt.py        nanoGPT's own train.py, configured by a config file, on train.bin/val.bin of our tokens
nanochat.py       nanochat's own scripts/base_train.py, its tokenizer and data loader swapped for ours
nanochat_main.py  the process that runs base_train.py with those swaps
"""
