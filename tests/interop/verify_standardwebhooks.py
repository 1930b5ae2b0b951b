"""Verifies deliveries with the official Standard Webhooks library, as a receiver would.

Reads JSON from stdin: {"secret": "whsec_...", "deliveries": [{"headers": {...}, "body": "..."}]}
and prints one line per delivery: "ok" or "invalid: <reason>".
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

request = json.load(sys.stdin)
webhook = Webhook(request["secret"])
for delivery in request["deliveries"]:
    try:
        webhook.verify(delivery["body"], delivery["headers"])
        print("ok")
    except WebhookVerificationError as error:
        print(f"invalid: {error}")
