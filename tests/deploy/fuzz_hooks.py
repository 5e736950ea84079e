"""schemathesis hooks for tests/deploy/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

Generated answers are capped at a few tokens: the fuzzer looks for bad input handling, and a 4,000-token answer per
generated case would only measure the CPU."""

import schemathesis

CAP = 8


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict):
        for key in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(key), int) and body[key] > CAP:
                body[key] = CAP
    return body
