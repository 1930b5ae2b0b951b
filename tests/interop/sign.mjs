// Signs a request with a platform's official Node library, for hookgate's interop tests.
//
// Reads one JSON object on stdin, {"scheme", "secret", "url", "body"}, and prints
// {"headers": {...}}: the headers the platform would send, as its own library computes them.
// There is no signing code here, only calls into the libraries. The libraries are looked up in
// the node_modules folder named by HOOKGATE_TEST_NODE_MODULES; one that is not there exits with
// status 3 and says which, so the calling test can skip.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const MISSING_LIBRARY = 3;

// The file a package exports for `import` under Node, read from its package.json the way
// Node's resolver does: the "." entry, conditions "node", "import", "default" in order.
function entryPoint(modules, name) {
  const folder = join(modules, name);
  const manifest = JSON.parse(readFileSync(join(folder, "package.json"), "utf8"));
  let target = manifest.exports?.["."] ?? manifest.exports ?? manifest.module ?? manifest.main;
  while (target && typeof target === "object") {
    const condition = ["node", "import", "default"].find((key) => key in target);
    target = condition ? target[condition] : undefined;
  }
  if (typeof target !== "string") throw new Error(`${name} exports no entry point for Node`);
  return pathToFileURL(join(folder, target)).href;
}

async function library(name) {
  const modules = process.env.HOOKGATE_TEST_NODE_MODULES;
  if (!modules) {
    console.error(`missing library: ${name} (HOOKGATE_TEST_NODE_MODULES is not set)`);
    process.exit(MISSING_LIBRARY);
  }
  try {
    return await import(entryPoint(modules, name));
  } catch (error) {
    console.error(`missing library: ${name} (${error.message})`);
    process.exit(MISSING_LIBRARY);
  }
}

const schemes = {
  async github(request) {
    const { sign } = await library("@octokit/webhooks-methods");
    return { "X-Hub-Signature-256": await sign(request.secret, request.body) };
  },
};

const request = JSON.parse(readFileSync(0, "utf8"));
const scheme = schemes[request.scheme];
if (!scheme) {
  console.error(`unknown scheme "${request.scheme}"; known: ${Object.keys(schemes).join(", ")}`);
  process.exit(1);
}
process.stdout.write(JSON.stringify({ headers: await scheme(request) }));
