"""Schemathesis hooks for delivery-hook: sign the requests it means to authenticate.

The document declares the `signature` security scheme (an API key in
`X-Signature`). The signature must cover the exact bytes on the wire (the raw
body, or for a GET the request target), which exist only once `requests` has
prepared the request, so the auth provider below only marks a request as one
to sign, and the transport adapter signs it just before sending. A request
schemathesis sends without the scheme, or with an X-Signature of its own
making, goes out as it is: the gateway must refuse it.
"""

import hashlib
import hmac
import os
import time

import requests.adapters
import schemathesis

_SECRET = os.environ["DELIVERY_SIGNING_SECRET"].encode()
_PROJECT = os.environ.get("DELIVERY_PROJECT", "schemathesis")
_PLACEHOLDER = "sign-this-request"
_send = requests.adapters.HTTPAdapter.send


@schemathesis.auth()
class Signature:
    """Marks a request for signing; the transport signs the final bytes."""

    def get(self, case, context):
        return _PLACEHOLDER

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["X-Signature"] = data


def _signed_send(self, request, *args, **kwargs):
    if request.headers.get("X-Signature") == _PLACEHOLDER:
        timestamp = str(int(time.time()))
        if request.method in ("GET", "HEAD"):
            message = request.path_url.encode()
        else:
            body = request.body or b""
            message = body.encode() if isinstance(body, str) else bytes(body)
        signature = hmac.new(_SECRET, message + timestamp.encode(), hashlib.sha256).hexdigest()
        request.headers["X-Timestamp"] = timestamp
        request.headers["X-Signature"] = signature
        request.headers["X-Project"] = _PROJECT
    return _send(self, request, *args, **kwargs)


requests.adapters.HTTPAdapter.send = _signed_send
