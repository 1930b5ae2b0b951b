"""Signs a request the way a platform's own documentation describes, for hookgate's tests of
the schemes that have no published test vectors.

This is a second reading of each platform's documentation, independent of hookgate's: it uses
nothing but Python's standard library (hmac, hashlib, base64) and shares no code with the
gateway. Each function names the page it follows and says what that page documents: the
headers, the signed content and the encoding.

Reads one JSON object on stdin, {"scheme", "secret", "url", "body"} (and "hmac" for
generic-hmac), and prints {"url", "headers", "body"}: where the platform posts, the headers it
sends, and the exact body (some platforms carry signed fields in the body, so it may differ from
the body given). The clock is this process's own, as the platform's would be.
"""

import base64
import hashlib
import hmac
import json
import re
import secrets
import sys
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlencode, urlsplit, urlunsplit

ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def mac(algorithm, secret, message):
    """The raw HMAC (RFC 2104) of `message` with `secret`, both as UTF-8."""
    return hmac.new(secret.encode(), message.encode(), ALGORITHMS[algorithm]).digest()


def b64(raw):
    return base64.b64encode(raw).decode()


def now_seconds():
    return str(int(time.time()))


def unchanged(request, headers):
    return {"url": request["url"], "headers": headers, "body": request["body"]}


def calendly(request):
    # developer.calendly.com, "Webhook Signatures": the Calendly-Webhook-Signature header is
    # "t=<timestamp>,v1=<signature>"; the signed payload is the timestamp, the character ".",
    # then the request body; the signature is the hex HMAC-SHA256 of it with the webhook
    # signing key.
    t = now_seconds()
    v1 = mac("sha256", request["secret"], f"{t}.{request['body']}").hex()
    return unchanged(request, {"Calendly-Webhook-Signature": f"t={t},v1={v1}"})


def zoom(request):
    # developers.zoom.us, "Using webhooks", verify webhook events: the message is
    # "v0:{x-zm-request-timestamp}:{request body}"; x-zm-signature is "v0=" followed by the
    # hex HMAC-SHA256 of the message with the app's secret token; the timestamp is in seconds.
    timestamp = now_seconds()
    digest = mac("sha256", request["secret"], f"v0:{timestamp}:{request['body']}").hex()
    return unchanged(request, {"x-zm-request-timestamp": timestamp, "x-zm-signature": f"v0={digest}"})


def zoom_url_validation(request):
    # Same page, "Validate your webhook endpoint": Zoom posts an endpoint.url_validation event
    # (signed like any other) and expects {"plainToken", "encryptedToken"} back, where
    # encryptedToken is the hex HMAC-SHA256 of plainToken with the secret token.
    signed = zoom(request)
    plain = json.loads(request["body"])["payload"]["plainToken"]
    signed["reply"] = {"plainToken": plain, "encryptedToken": mac("sha256", request["secret"], plain).hex()}
    return signed


def mailgun(request):
    # documentation.mailgun.com, "Securing Webhooks": the signature travels in the JSON body as
    # {"signature": {"timestamp", "token", "signature"}} beside "event-data"; token is a random
    # string of 50 characters, timestamp is in seconds, and signature is the hex HMAC-SHA256 of
    # timestamp and token concatenated with no separator, keyed with the webhook signing key.
    # The event data itself is not signed.
    timestamp, token = now_seconds(), secrets.token_hex(25)
    signature = mac("sha256", request["secret"], timestamp + token).hex()
    body = {"signature": {"timestamp": timestamp, "token": token, "signature": signature}}
    body.update(json.loads(request["body"]))
    return {"url": request["url"], "headers": {}, "body": json.dumps(body)}


def intercom(request):
    # developers.intercom.com, "Signed Notifications": X-Hub-Signature is "sha1=" followed by the
    # hexadecimal (40 characters) HMAC-SHA1 (RFC 2104) of the JSON notification, keyed with the
    # app's client secret.
    return unchanged(request, {"X-Hub-Signature": "sha1=" + mac("sha1", request["secret"], request["body"]).hex()})


def zendesk(request):
    # developer.zendesk.com, "Verifying webhook authenticity": X-Zendesk-Webhook-Signature is
    # base64(HMACSHA256(TIMESTAMP + BODY)) with the webhook's signing secret, where TIMESTAMP is
    # the X-Zendesk-Webhook-Signature-Timestamp header, an ISO 8601 time such as
    # 2021-07-25T10:00:00Z.
    timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = b64(mac("sha256", request["secret"], timestamp + request["body"]))
    return unchanged(
        request,
        {"X-Zendesk-Webhook-Signature": signature, "X-Zendesk-Webhook-Signature-Timestamp": timestamp},
    )


def linear(request):
    # linear.app/developers/webhooks, "Securing webhooks": Linear-Signature is the hex
    # HMAC-SHA256 of the raw body with the webhook's signing secret; the body's webhookTimestamp
    # is the sending time in Unix milliseconds, to be checked within a minute.
    body = json.loads(request["body"])
    body["webhookTimestamp"] = int(time.time() * 1000)
    text = json.dumps(body)
    return {
        "url": request["url"],
        "headers": {"Linear-Signature": mac("sha256", request["secret"], text).hex()},
        "body": text,
    }


def typeform(request):
    # typeform.com/developers/webhooks/secure-your-webhooks: HMAC-SHA256 of the entire payload
    # with the secret as key, the binary hash encoded in base64 and prefixed with "sha256=", in
    # the Typeform-Signature header.
    signature = "sha256=" + b64(mac("sha256", request["secret"], request["body"]))
    return unchanged(request, {"Typeform-Signature": signature})


def meta(request):
    # developers.facebook.com/docs/graph-api/webhooks/getting-started, "Validating payloads":
    # X-Hub-Signature-256 is "sha256=" followed by the lowercase hex HMAC-SHA256 of the payload
    # with the app secret. Meta signs the payload as sent, with non-ASCII characters escaped
    # (\u00e9), so the body is signed exactly as given.
    signature = "sha256=" + mac("sha256", request["secret"], request["body"]).hex()
    return unchanged(request, {"X-Hub-Signature-256": signature})


def gitlab(request):
    # docs.gitlab.com, "Webhooks", validate payloads by using a secret token: GitLab sends the
    # secret token as it was entered, in the X-Gitlab-Token header. Nothing is signed.
    return unchanged(request, {"X-Gitlab-Token": request["secret"]})


def basic_auth(request):
    # postmarkapp.com/developer/webhooks/webhooks-overview, "Basic HTTP authentication": the
    # credentials go in the webhook URL as https://<username>:<password>@example.com/webhook;
    # an HTTP client sends them as "Authorization: Basic " + base64("<username>:<password>")
    # (RFC 7617), and the URL it requests has no user information.
    username, password = request["secret"].split(":", 1)
    credentials = b64(f"{username}:{password}".encode())
    return unchanged(request, {"Authorization": f"Basic {credentials}"})


def url_token(request):
    # hookgate's docs/hook-definitions.md, scheme "url-token": a secret `token` query parameter
    # in the URL the platform posts to. Appended as a form-encoded query parameter, so a token
    # with reserved characters arrives percent-encoded.
    parts = urlsplit(request["url"])
    query = "&".join(part for part in [parts.query, urlencode({"token": request["secret"]})] if part)
    return {"url": urlunsplit(parts._replace(query=query)), "headers": {}, "body": request["body"]}


def generic_hmac(request):
    # hookgate's docs/hook-definitions.md, scheme "generic-hmac": the header named by `header`
    # carries `prefix` and the `encoding` (hex or base64) of the HMAC with `algorithm` of the
    # `signed` template, whose placeholders are {body}, {timestamp} (Unix seconds, sent in
    # `timestampHeader`), {id} (sent in `idHeader`), {method} and {url}.
    config = request["hmac"]
    values = {
        "body": request["body"],
        "timestamp": now_seconds(),
        "id": f"evt_{uuid.uuid4().hex}",
        "method": "POST",
        "url": request["url"],
    }
    # One pass over the template, so that a body containing "{timestamp}" stays as it is.
    signed = re.sub(r"\{(body|timestamp|id|method|url)\}", lambda m: values[m.group(1)], config["signed"])
    raw = mac(config["algorithm"], request["secret"], signed)
    encoded = raw.hex() if config["encoding"] == "hex" else b64(raw)
    headers = {config["header"]: config.get("prefix", "") + encoded}
    if "timestampHeader" in config:
        headers[config["timestampHeader"]] = values["timestamp"]
    if "idHeader" in config:
        headers[config["idHeader"]] = values["id"]
    return unchanged(request, headers)


SCHEMES = {
    "calendly": calendly,
    "zoom": zoom,
    "zoom-url-validation": zoom_url_validation,
    "mailgun": mailgun,
    "intercom": intercom,
    "zendesk": zendesk,
    "linear": linear,
    "typeform": typeform,
    "meta": meta,
    "gitlab": gitlab,
    "basic-auth": basic_auth,
    "url-token": url_token,
    "generic-hmac": generic_hmac,
}


def main():
    request = json.load(sys.stdin)
    scheme = SCHEMES.get(request["scheme"])
    if scheme is None:
        sys.exit(f"unknown scheme {request['scheme']!r}; known: {', '.join(SCHEMES)}")
    json.dump(scheme(request), sys.stdout)


if __name__ == "__main__":
    main()
