"""schemathesis hooks for scripts/api-fuzz.

`refused`: in a phase that must only make refused calls (ROLEGATE_FUZZ_EXPECT=refused),
any answer below 400 fails the run; elsewhere the check passes everything.
"""

import os

import schemathesis


@schemathesis.check
def refused(ctx, response, case):
    """Every call of a refused-only phase is answered with a 4xx."""
    if os.environ.get("ROLEGATE_FUZZ_EXPECT") != "refused":
        return None
    if not 400 <= response.status_code < 500:
        raise AssertionError(
            f"{case.method} {case.formatted_path}: expected a refusal (4xx), got {response.status_code}"
        )
    return None
