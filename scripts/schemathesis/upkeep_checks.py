"""Schemathesis hooks for upkeep's API: every 4xx answer has the JSON error shape.

Loaded by scripts/schemathesis.sh through SCHEMATHESIS_HOOKS=upkeep_checks.
"""

import schemathesis


@schemathesis.check
def json_error_shape(ctx, response, case):
    """A 4xx body is a JSON object with a string `error` and, when present, a string `field`."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    if not content_type.startswith("application/json"):
        raise AssertionError(
            f"{response.status_code} answered with content-type {content_type!r}, not JSON"
        )
    try:
        body = response.json()
    except Exception as error:  # noqa: BLE001 - any decoding failure is the finding
        raise AssertionError(f"{response.status_code} body is not JSON: {error}") from None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        raise AssertionError(f"{response.status_code} body has no string `error`: {body!r}")
    if "field" in body and not isinstance(body["field"], str):
        raise AssertionError(f"{response.status_code} `field` is not a string: {body!r}")
    return None
