"""Serving: the in-process llama.cpp batching engine, the remote generator, the OpenAI-compatible surface.

llama.cpp's threads meet at an OpenMP barrier after every operation. libgomp spins only 100 times there
before sleeping when it counts more OpenMP threads than CPUs, which the engine's own decode thread can
bring about; OMP_WAIT_POLICY=active with the default spin count kept raises that to 1,000 and changes
nothing else (measured gain and details: docs/serving.md, "OpenMP wait policy"). libgomp reads both when
it is loaded, so they are set here, ahead of every `import llama_cpp`; a wait policy already in the
environment wins, and then neither is touched.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "active"
    os.environ.setdefault("GOMP_SPINCOUNT", "300000")
