// Runs this provider's verifiers over docs/contract-vectors.json and prints
// every verdict that differs from the contract's; exit status 1 if any does.
//   tsx src/check-vectors.ts [path/to/contract-vectors.json]
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { TokenRefused, Verifier, loadGatewayKeys } from "./tokens.js";

interface Vector {
  name: string;
  audience: string;
  token: string;
  status: string;
  rpc?: string;
  target?: string;
}

const PURPOSES: Record<string, string> = {
  "onecert.v1.BindingProvider/ListBindings": "lookup",
  "onecert.v1.BindingProvider/Unbind": "unbind",
  "onecert.v1.NumberRegistry/ListNumbers": "lookup",
};

const here = path.dirname(fileURLToPath(import.meta.url));
const file = process.argv[2] ?? path.resolve(here, "../../../docs/contract-vectors.json");
const vectors = JSON.parse(readFileSync(file, "utf8")) as {
  now: number;
  issuer: string;
  jwks: object;
  warrants: Vector[];
  sets: Vector[];
};
const jwksFile = path.join(mkdtempSync(path.join(tmpdir(), "vectors-")), "jwks.json");
writeFileSync(jwksFile, JSON.stringify(vectors.jwks));
const keys = await loadGatewayKeys(jwksFile);

function status(error: unknown, invalid: string): string {
  if (!(error instanceof TokenRefused)) throw error;
  return error.kind === "invalid" ? invalid : "UNAUTHENTICATED";
}

let wrong = 0;
for (const v of vectors.warrants) {
  const verifier = new Verifier(keys, vectors.issuer, v.audience);
  let got = "OK";
  try {
    await verifier.warrant(v.token, v.target ?? "", PURPOSES[v.rpc ?? ""] ?? "", vectors.now);
  } catch (error) {
    got = status(error, "UNAUTHENTICATED");
  }
  if (got !== v.status) {
    wrong += 1;
    console.log(`warrant ${v.name}: got ${got}, the contract says ${v.status}`);
  }
}
for (const v of vectors.sets) {
  const verifier = new Verifier(keys, vectors.issuer, v.audience);
  let got = "OK";
  try {
    await verifier.notice(v.token, vectors.now);
  } catch (error) {
    got = status(error, "INVALID_ARGUMENT");
  }
  if (got !== v.status) {
    wrong += 1;
    console.log(`notice ${v.name}: got ${got}, the contract says ${v.status}`);
  }
}
const total = vectors.warrants.length + vectors.sets.length;
console.log(`${total - wrong} of ${total} vectors get the contract's verdict`);
process.exit(wrong === 0 ? 0 : 1);
