"""Benchmarks of vlx against the reference implementations (`vlx bench NAME`, docs/BENCHMARKS.md).

One module per benchmark — `train_step` (transformers' LLaVA in a plain loop), `predict_action`
(OpenVLA-style `generate()`), `loader` (robomimic's `SequenceDataset`), `gpu` (7B-shaped recipes on a
GPU) — each with a `run(...)` that checks both sides compute the same thing, times them and returns a
`BenchResult`; `timing` interleaves the contenders and prints the table and the ratio line; `models`
builds the random benchmark models offline.
"""
