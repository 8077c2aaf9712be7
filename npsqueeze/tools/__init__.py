"""The tools around the model: the `npsqueeze` command and what measures the model.

cli (the command), infer (fill-mask, classify, embed), report (parameters, FLOPs, time), bench
(latency, throughput, memory), convert (checkpoints -> memory-mapped folders), flops (counting) and
measure (timing and memory helpers). They import the model; the model never imports them.
"""
