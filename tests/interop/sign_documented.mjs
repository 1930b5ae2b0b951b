// Signs a request the way a platform's own documentation describes, for hookgate's tests of the
// public-key schemes, with key pairs generated here.
//
// This is a second reading of each platform's documentation, independent of hookgate's: it uses
// nothing but Node's built-in crypto module (Ed25519 and ECDSA) and shares no code with the
// gateway. Each scheme names the page it follows and says what that page documents: the key
// format, the headers, the signed content and the encoding.
//
// Reads one JSON object on stdin and prints one JSON object:
//   {"scheme", "operation": "keypair"} -> {"publicKey", "privateKey"}: a fresh key pair, the
//     public key as the platform shows it to its users (what hookgate is configured with), the
//     private key as PKCS#8 DER in base64 (the platform keeps it; here it goes back to "sign").
//   {"scheme", "secret": privateKey, "url", "body"} -> {"url", "headers", "body"}: the request
//     as the platform sends it. The clock is this process's own, as the platform's would be.

import { createPrivateKey, generateKeyPairSync, randomUUID, sign } from "node:crypto";
import { readFileSync } from "node:fs";

const seconds = () => String(Math.floor(Date.now() / 1000));

function privateKey(secret) {
  return createPrivateKey({ key: Buffer.from(secret, "base64"), format: "der", type: "pkcs8" });
}

function pkcs8(key) {
  return key.export({ format: "der", type: "pkcs8" }).toString("base64");
}

// The 32 bytes of an Ed25519 public key (RFC 8032), from its JWK form (RFC 8037: "x").
function rawEd25519(publicKey) {
  return Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url");
}

const schemes = {
  // discord.com/developers/docs/interactions/overview, "Setting Up an Endpoint", validating
  // security request headers: the application's public key is shown as hex; every request
  // carries X-Signature-Ed25519 (hex) and X-Signature-Timestamp, and the signature is Ed25519
  // over the timestamp followed by the raw body.
  discord: {
    keypair() {
      const { publicKey, privateKey } = generateKeyPairSync("ed25519");
      return { publicKey: rawEd25519(publicKey).toString("hex"), privateKey: pkcs8(privateKey) };
    },
    sign(request) {
      const timestamp = seconds();
      const signature = sign(null, Buffer.from(timestamp + request.body), privateKey(request.secret));
      return { "X-Signature-Ed25519": signature.toString("hex"), "X-Signature-Timestamp": timestamp };
    },
  },

  // twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features:
  // SendGrid generates an ECDSA key pair (P-256) and shows the public key as base64 DER
  // (SubjectPublicKeyInfo); X-Twilio-Email-Event-Webhook-Signature is the base64 DER ECDSA
  // signature with SHA-256 over X-Twilio-Email-Event-Webhook-Timestamp followed by the payload.
  sendgrid: {
    keypair() {
      const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
      return {
        publicKey: publicKey.export({ format: "der", type: "spki" }).toString("base64"),
        privateKey: pkcs8(privateKey),
      };
    },
    sign(request) {
      const timestamp = seconds();
      // Node's ECDSA signatures are DER-encoded unless asked otherwise.
      const signature = sign("sha256", Buffer.from(timestamp + request.body), privateKey(request.secret));
      return {
        "X-Twilio-Email-Event-Webhook-Signature": signature.toString("base64"),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
      };
    },
  },

  // github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md, "Asymmetric
  // signatures": Ed25519 with version "v1a"; the public key is "whpk_" followed by the base64
  // of its 32 bytes; webhook-signature is "v1a," followed by the base64 signature over
  // "{webhook-id}.{webhook-timestamp}.{body}", the timestamp in Unix seconds.
  "standard-webhooks-v1a": {
    keypair() {
      const { publicKey, privateKey } = generateKeyPairSync("ed25519");
      return { publicKey: `whpk_${rawEd25519(publicKey).toString("base64")}`, privateKey: pkcs8(privateKey) };
    },
    sign(request) {
      const id = `msg_${randomUUID().replaceAll("-", "")}`;
      const timestamp = seconds();
      const signature = sign(null, Buffer.from(`${id}.${timestamp}.${request.body}`), privateKey(request.secret));
      return {
        "webhook-id": id,
        "webhook-timestamp": timestamp,
        "webhook-signature": `v1a,${signature.toString("base64")}`,
      };
    },
  },
};

const request = JSON.parse(readFileSync(0, "utf8"));
const scheme = schemes[request.scheme];
if (!scheme) {
  console.error(`unknown scheme "${request.scheme}"; known: ${Object.keys(schemes).join(", ")}`);
  process.exit(1);
}
const reply =
  request.operation === "keypair"
    ? scheme.keypair()
    : { url: request.url, headers: scheme.sign(request), body: request.body };
process.stdout.write(JSON.stringify(reply));
