#!/usr/bin/env python3
"""Builds the fuzzers' seed corpora in fuzz/corpus/<target>/ from the project's fixtures:
definition files (hook-definitions/), mail (fixtures/email/*.eml, also wrapped in SMTP sessions),
HTTP bodies (fixtures/http/, each behind its Content-Type line), and one request per signature
scheme with the headers its platform sends (values from fixtures/signatures where published).
Idempotent: a seed is named by the SHA-1 of its bytes, as libFuzzer names what it finds."""

import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def seed(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def definitions():
    for path in sorted((ROOT / "hook-definitions").rglob("*.json")):
        seed("definitions", path.read_bytes())


def mail():
    for path in sorted((ROOT / "fixtures" / "email").glob("*.eml")):
        raw = path.read_bytes()
        seed("mime", raw)
        # Dot-stuffed and CRLF-ended as a client sends it; `{hook}` is the harness's hook address.
        lines = raw.replace(b"\r\n", b"\n").split(b"\n")
        body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
        session = (
            b"EHLO client.example\r\nMAIL FROM:<sender@client.example>\r\n"
            b"RCPT TO:<{hook}@fuzz.example>\r\nDATA\r\n" + body + b"\r\n.\r\nQUIT\r\n"
        )
        seed("smtp_session", session)
    for commands in [
        "EHLO a\r\nMAIL FROM:<a@b.example> SIZE=1000\r\nRCPT TO:<{hook}@fuzz.example>\r\nRSET\r\nNOOP\r\nQUIT\r\n",
        "HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<nobody@elsewhere.example>\r\nDATA\r\nVRFY x\r\nHELP\r\nSTARTTLS\r\n",
        "EHLO a\r\nMAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<{hook}@FUZZ.EXAMPLE>\r\nDATA\r\nSubject: x\r\n\r\n{\"a\": 1}\r\n.\r\nQUIT\r\n",
        "AUTH PLAIN AGFiYwBkZWY=\r\nBDAT 5 LAST\r\nhello\r\nLHLO x\r\nEXPN list\r\n",
    ]:
        seed("smtp_session", commands)


def payloads():
    http = ROOT / "fixtures" / "http"
    seed("payload", b"application/json\n" + (http / "order-update.json").read_bytes())
    seed("payload", b"application/xml; charset=utf-8\n" + (http / "order-update.xml").read_bytes())
    seed("payload", b"application/x-www-form-urlencoded\n" + (http / "contact-form.txt").read_bytes())
    seed(
        "payload",
        "multipart/form-data; boundary=XyZ\n"
        "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nAna\r\n"
        "--XyZ\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.png\"\r\n"
        "Content-Type: image/png\r\n\r\n\x89PNG\r\n--XyZ--\r\n",
    )
    seed("payload", "text/xml\n<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>")


# Per scheme (the fuzz target's selector byte), the headers its platform sends.
SCHEME_HEADERS = {
    0: "webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek\nwebhook-timestamp: 1614265330\nwebhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1a,AAAA\n",
    1: "stripe-signature: t=1614265330,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=00\n",
    2: "x-hub-signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17\nx-hub-signature: sha1=00\n",
    3: "x-hubspot-signature-v3: YWJj\nx-hubspot-request-timestamp: 1614265330000\nx-hubspot-signature: 00\nx-hubspot-signature-version: v2\n",
    4: "x-shopify-hmac-sha256: YWJjZGVm\n",
    5: "x-slack-signature: v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503\nx-slack-request-timestamp: 1614265330\n",
    6: "x-twilio-signature: YWJjZGVm\n",
    7: "x-square-hmacsha256-signature: YWJjZGVm\n",
    8: "paddle-signature: ts=1614265330;h1=00ff\n",
    9: "x-signature-ed25519: " + "00" * 64 + "\nx-signature-timestamp: 1614265330\n",
    10: "x-zm-signature: v0=00ff\nx-zm-request-timestamp: 1614265330\n",
    11: "x-twilio-email-event-webhook-signature: MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=\nx-twilio-email-event-webhook-timestamp: 1600112502\n",
    12: "content-type: application/json\n",
    13: "x-hub-signature: sha1=00ff\n",
    14: "x-zendesk-webhook-signature: YWJj\nx-zendesk-webhook-signature-timestamp: 2021-02-25T15:02:10Z\n",
    15: "linear-signature: 00ff\n",
    16: "typeform-signature: sha256=YWJj\n",
    17: "calendly-webhook-signature: t=1614265330,v1=00ff\n",
    18: "x-gitlab-token: fuzz-secret-for-hookgate-0123456789\n",
    19: "authorization: Basic ZnV6ei11c2VyOmZ1enotcGFzc3dvcmQ=\n",
    20: "x-forwarded-for: 127.0.0.1\n",
    21: "x-signature: sha256=00ff\nx-timestamp: 1614265330\nx-id: 42\n",
}

BODIES = {
    12: '{"signature": {"timestamp": "1614265330", "token": "t", "signature": "00ff"}, "event-data": {}}',
    15: '{"action": "create", "webhookTimestamp": 1614265330000}',
}


def signatures():
    for selector, headers in SCHEME_HEADERS.items():
        body = BODIES.get(selector, '{"test": 2432232314}')
        details = [0, 1, 0x4D] if selector == 21 else [0, 1]
        for detail in details:
            seed("signatures", bytes([selector, detail]) + (headers + "\n" + body).encode())
    vectors = json.loads((ROOT / "fixtures" / "signatures" / "published-vectors.json").read_text())
    for vector in vectors.get("standard_webhooks_v1", []):
        headers = f"webhook-id: {vector['msg_id']}\nwebhook-timestamp: {vector['timestamp']}\nwebhook-signature: {vector['expected']}\n"
        seed("signatures", bytes([0, 0]) + (headers + "\n" + vector["body"]).encode())


if __name__ == "__main__":
    definitions()
    mail()
    payloads()
    signatures()
    for target in sorted(CORPUS.iterdir()):
        print(f"{target.name}: {len(list(target.iterdir()))} seeds")
