"""Signs a request with a platform's official Python library, for hookgate's interop tests.

Reads one JSON object on stdin, {"scheme", "secret", "url", "body"}, and prints
{"headers": {...}}: the headers the platform would send, as its own library computes them.
There is no signing code here, only calls into the libraries. A library that is not installed
exits with status 3 and says which, so the calling test can skip.
"""

import importlib
import json
import sys
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import parse_qs

MISSING_LIBRARY = 3


def library(module, package):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        print(f"missing library: {package} ({error})", file=sys.stderr)
        sys.exit(MISSING_LIBRARY)


class FormParameters(dict):
    """A parsed form body with Django's QueryDict `getlist`, one of the shapes Twilio's
    RequestValidator reads repeated parameters from."""

    def getlist(self, name):
        return self[name]


def stripe(request):
    webhook = library("stripe", "stripe")
    header = webhook.WebhookSignature.generate_signature_header(request["body"], request["secret"])
    return {"Stripe-Signature": header}


def standard_webhooks(request):
    webhooks = library("standardwebhooks", "standardwebhooks")
    message_id = f"msg_{uuid.uuid4().hex}"
    signed_at = datetime.now(timezone.utc)
    signature = webhooks.Webhook(request["secret"]).sign(message_id, signed_at, request["body"])
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(signed_at.timestamp())),
        "webhook-signature": signature,
    }


def slack(request):
    signature = library("slack_sdk.signature", "slack-sdk")
    timestamp = str(int(time.time()))
    verifier = signature.SignatureVerifier(signing_secret=request["secret"])
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": verifier.generate_signature(timestamp=timestamp, body=request["body"]),
    }


def twilio(algorithm):
    def sign(request):
        validator = library("twilio.request_validator", "twilio")
        parameters = FormParameters(parse_qs(request["body"], keep_blank_values=True))
        token = validator.RequestValidator(request["secret"])
        headers = {"X-Twilio-Signature": token.compute_signature(request["url"], parameters, algorithm)}
        if algorithm != validator.HMAC_SHA1:
            # Webhooks signed with a SharedKey name their key and algorithm in this header.
            headers[validator.SIGNATURE_SETTINGS_HEADER] = f"key=webhooks_sharedkey_interop,algorithm={algorithm}"
        return headers

    return sign


def hubspot(version):
    def sign(request):
        signatures = library("hubspot.utils.signature", "hubspot-api-client")
        timestamp = str(int(time.time() * 1000))
        signature = signatures.Signature.get_signature(
            request["secret"],
            request["body"],
            version,
            http_uri=request["url"],
            http_method="POST",
            timestamp=timestamp,
        )
        if version == "v3":
            return {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp}
        return {"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": version}

    return sign


SCHEMES = {
    "stripe": stripe,
    "standard-webhooks": standard_webhooks,
    "slack": slack,
    "twilio": twilio("HMAC_SHA1"),
    "twilio-hmac-sha256": twilio("HMAC_SHA256"),
    "hubspot": hubspot("v3"),
    "hubspot-v2": hubspot("v2"),
    "hubspot-v1": hubspot("v1"),
}


def main():
    request = json.load(sys.stdin)
    scheme = SCHEMES.get(request["scheme"])
    if scheme is None:
        sys.exit(f"unknown scheme {request['scheme']!r}; known: {', '.join(SCHEMES)}")
    json.dump({"headers": scheme(request)}, sys.stdout)


if __name__ == "__main__":
    main()
