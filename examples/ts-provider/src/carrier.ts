// A NumberRegistry (a carrier) in TypeScript on Node, from docs/contract.md
// section 9, sharing the warrant checks of the provider (src/tokens.ts).
//
// Configuration comes from the environment:
//   GATEWAY_JWKS  path of the gateway's JWKS (W-18)              (required)
//   CARRIER_ID    this carrier's id, the `aud` of its warrants   (default ts-carrier)
//   ISSUER        the gateway id                                 (default onecert-gateway)
//   LISTEN        host:port; port 0 picks one                    (default 127.0.0.1:50052)
//   PROTO_ROOT    the folder holding onecert/v1/*.proto          (default ../../proto)
// It prints `listening on HOST:PORT` once it serves.
import { createHash } from "node:crypto";

import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";

import { loadService } from "./proto.js";
import { TokenRefused, Verifier, loadGatewayKeys } from "./tokens.js";

const carrierId = process.env.CARRIER_ID ?? "ts-carrier";
const issuer = process.env.ISSUER ?? "onecert-gateway";
const listen = process.env.LISTEN ?? "127.0.0.1:50052";
const SERVICE = "onecert.v1.NumberRegistry";
const IDN = /^[0-9a-f]{64}$/;

/** The idns of the example's two subscribers (keyed hashes of document numbers). */
const IDNS = {
  a: createHash("sha256").update("ts-carrier subscriber A").digest("hex"),
  b: createHash("sha256").update("ts-carrier subscriber B").digest("hex"),
};

function at(iso: string): { seconds: number; nanos: number } {
  return { seconds: Math.floor(Date.parse(iso) / 1000), nanos: 0 };
}

// idn -> tenures: held_until only once the number is no longer held (C-1).
const TENURES = new Map<string, object[]>([
  [
    IDNS.a,
    [
      {
        msisdn: "+8613800000001",
        carrier_id: carrierId,
        held_from: at("2018-01-01T00:00:00Z"),
        state: "TENURE_STATE_ACTIVE",
      },
      {
        msisdn: "+8613900000009",
        carrier_id: carrierId,
        held_from: at("2012-05-01T00:00:00Z"),
        held_until: at("2017-12-31T00:00:00Z"),
        state: "TENURE_STATE_RECYCLED",
      },
    ],
  ],
  [
    IDNS.b,
    [
      {
        msisdn: "+8613800000002",
        carrier_id: carrierId,
        held_from: at("2022-02-01T00:00:00Z"),
        state: "TENURE_STATE_SUSPENDED",
      },
    ],
  ],
]);

async function main(): Promise<void> {
  const jwks = process.env.GATEWAY_JWKS;
  if (!jwks) throw new Error("set GATEWAY_JWKS to the gateway's JWKS file");
  const verifier = new Verifier(await loadGatewayKeys(jwks), issuer, carrierId);

  const ListNumbers: grpc.handleUnaryCall<{ idn: string }, object> = async (call, callback) => {
    const refuse = (code: grpc.status, details: string): void =>
      callback({ code, details, name: "Refusal", message: details }, null);
    const value = call.metadata.get("authorization")[0];
    const [scheme, token] = typeof value === "string" ? value.split(" ", 2) : [];
    try {
      if (scheme?.toLowerCase() !== "bearer" || !token) {
        throw new TokenRefused("untrusted", "no warrant"); // W-1
      }
      await verifier.warrant(token, call.request.idn, "lookup"); // W-2 to W-17
    } catch (error) {
      const reason = error instanceof TokenRefused ? error.message : "malformed warrant";
      refuse(grpc.status.UNAUTHENTICATED, `warrant refused: ${reason}`);
      return;
    }
    if (!IDN.test(call.request.idn)) {
      refuse(grpc.status.INVALID_ARGUMENT, "idn must be 64 lowercase hex characters"); // C-3
      return;
    }
    callback(null, { tenures: TENURES.get(call.request.idn) ?? [] }); // C-1, C-2
  };

  const server = new grpc.Server();
  server.addService(loadService("registry.proto", "NumberRegistry"), { ListNumbers });
  new HealthImplementation({ "": "SERVING", [SERVICE]: "SERVING" }).addToServer(server); // H-1, H-2
  server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (error, port) => {
    if (error) throw error;
    console.log(`listening on ${listen.slice(0, listen.lastIndexOf(":"))}:${port}`);
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => server.tryShutdown(() => process.exit(0)));
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
