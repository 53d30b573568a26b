// A BindingProvider in TypeScript on Node, written from docs/contract.md.
//
// Configuration comes from the environment:
//   GATEWAY_JWKS  path of the gateway's JWKS (W-18)               (required)
//   PROVIDER_ID   this provider's id, the `aud` of its warrants   (default ts-forum)
//   ISSUER        the gateway id, the `iss` of its tokens         (default onecert-gateway)
//   LISTEN        host:port to listen on; port 0 picks one        (default 127.0.0.1:50051)
//   PROTO_ROOT    the folder holding onecert/v1/*.proto           (default ../../proto)
// It prints `listening on HOST:PORT` once it serves. Plaintext only: in
// production put it behind mutual TLS (H-3), for example with
// grpc.ServerCredentials.createSsl(ca, [{cert_chain, private_key}], true).

import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";

import { loadService } from "./proto.js";
import { Bindings, type UnbindRequest } from "./store.js";
import { TokenRefused, Verifier, isE164, loadGatewayKeys } from "./tokens.js";

const providerId = process.env.PROVIDER_ID ?? "ts-forum";
const issuer = process.env.ISSUER ?? "onecert-gateway";
const listen = process.env.LISTEN ?? "127.0.0.1:50051";
const SERVICE = "onecert.v1.BindingProvider";

type Unary<Req, Res> = grpc.handleUnaryCall<Req, Res>;
type Callback<Res> = grpc.sendUnaryData<Res>;

function refuse<Res>(callback: Callback<Res>, code: grpc.status, details: string): void {
  // Details never carry the number or the account (contract section 1).
  callback({ code, details, name: "Refusal", message: details }, null);
}

function bearer(metadata: grpc.Metadata): string | undefined {
  const value = metadata.get("authorization")[0];
  if (typeof value !== "string") return undefined;
  const [scheme, token] = value.split(" ", 2);
  return scheme?.toLowerCase() === "bearer" && token ? token : undefined; // W-1
}

async function main(): Promise<void> {
  const jwks = process.env.GATEWAY_JWKS;
  if (!jwks) throw new Error("set GATEWAY_JWKS to the gateway's JWKS file");
  const verifier = new Verifier(await loadGatewayKeys(jwks), issuer, providerId);
  const bindings = new Bindings();

  // Check the call's warrant; false (and the call answered) when refused.
  async function warranted<Res>(
    call: grpc.ServerUnaryCall<{ msisdn: string }, Res>,
    callback: Callback<Res>,
    purpose: "lookup" | "unbind",
  ): Promise<boolean> {
    const token = bearer(call.metadata);
    try {
      if (token === undefined) throw new TokenRefused("untrusted", "no warrant");
      // W-14: the number exactly as received, before it is validated.
      await verifier.warrant(token, call.request.msisdn, purpose);
      return true;
    } catch (error) {
      const reason = error instanceof TokenRefused ? error.message : "malformed warrant";
      refuse(callback, grpc.status.UNAUTHENTICATED, `warrant refused: ${reason}`);
      return false;
    }
  }

  const Describe: Unary<object, object> = (_call, callback) => {
    callback(null, {
      provider_id: providerId,
      name: "TS Forum",
      category: "PROVIDER_CATEGORY_FORUM",
      contract_version: "onecert.v1",
      implementation: "onecert-ts-provider/1 (@grpc/grpc-js, jose)",
    });
  };

  const ListBindings: Unary<{ msisdn: string }, object> = async (call, callback) => {
    if (!(await warranted(call, callback, "lookup"))) return;
    if (!isE164(call.request.msisdn)) {
      refuse(callback, grpc.status.INVALID_ARGUMENT, "msisdn must be E.164"); // L-3
      return;
    }
    callback(null, { bindings: bindings.list(call.request.msisdn) }); // L-1, L-2
  };

  const Unbind: Unary<UnbindRequest, object> = async (call, callback) => {
    if (!(await warranted(call, callback, "unbind"))) return;
    const answer = bindings.unbind(call.request);
    if ("invalid" in answer) {
      refuse(callback, grpc.status.INVALID_ARGUMENT, answer.invalid); // U-1, U-6
      return;
    }
    callback(null, answer);
  };

  const ReceiveEvent: Unary<{ set: string }, object> = async (call, callback) => {
    try {
      const notice = await verifier.notice(call.request.set);
      callback(null, bindings.receive(notice)); // E-1, E-10
    } catch (error) {
      if (!(error instanceof TokenRefused)) throw error;
      const code =
        error.kind === "invalid" ? grpc.status.INVALID_ARGUMENT : grpc.status.UNAUTHENTICATED;
      refuse(callback, code, `event token refused: ${error.message}`);
    }
  };

  const server = new grpc.Server();
  server.addService(loadService("provider.proto", "BindingProvider"), {
    Describe,
    ListBindings,
    Unbind,
    ReceiveEvent,
  });
  // H-1, H-2: SERVING for the whole server and for the service.
  new HealthImplementation({ "": "SERVING", [SERVICE]: "SERVING" }).addToServer(server);
  server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (error, port) => {
    if (error) throw error;
    const host = listen.slice(0, listen.lastIndexOf(":"));
    console.log(`listening on ${host}:${port}`);
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => server.tryShutdown(() => process.exit(0)));
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
