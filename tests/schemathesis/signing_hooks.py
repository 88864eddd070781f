"""Schemathesis hooks for delivery-hook: sign every request it sends.

The signature must cover the exact bytes on the wire (the raw body, or for a
GET the request target), which exist only once `requests` has prepared the
request, so signing happens in the transport adapter, just before sending.
Generated values of the signing headers are replaced by valid ones: the run
exercises everything behind authentication.
"""

import hashlib
import hmac
import os
import time

import requests.adapters

_SECRET = os.environ["DELIVERY_SIGNING_SECRET"].encode()
_PROJECT = os.environ.get("DELIVERY_PROJECT", "schemathesis")
_send = requests.adapters.HTTPAdapter.send


def _signed_send(self, request, *args, **kwargs):
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
