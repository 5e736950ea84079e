"""Serving: the in-process llama.cpp batching engine, the remote generator, the OpenAI-compatible surface.

llama.cpp's CPU backend synchronises its threads with an OpenMP barrier after every operation, hundreds
of times per forward pass. libgomp's documented default is to spin 300,000 times at a barrier before
sleeping, but only 100 times when it counts more OpenMP threads than CPUs, which a decode thread of its
own beside the process's first thread can make it do; each sleep then costs a wake-up. Measured on 2
cores (0.5B model, 8 concurrent requests): with the default policy the engine's throughput swung from
run to run between 27 and 33 tokens/s, mostly near 28; with OMP_WAIT_POLICY=active and the default
spin count kept (GOMP_SPINCOUNT=300000) it held at 31-32 in every run. That pair changes only the
short spin (100 -> 1,000): idle threads still go to sleep within milliseconds. libgomp reads these
when it is loaded, so they are set here, ahead of every `import llama_cpp` in the package. A wait
policy already in the environment wins, and then neither is touched.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "active"
    os.environ.setdefault("GOMP_SPINCOUNT", "300000")
