// Loads a onecert v1 service from the .proto files at run time (no generated
// code): PROTO_ROOT is the folder holding onecert/v1/*.proto (default: the
// repository's proto/).
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = process.env.PROTO_ROOT ?? path.resolve(here, "../../../proto");

/** The service `name` of onecert/v1/`file`, fields in their .proto names, enums as names. */
export function loadService(file: string, name: string): grpc.ServiceDefinition {
  const definition = protoLoader.loadSync(`onecert/v1/${file}`, {
    includeDirs: [protoRoot],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    onecert: { v1: Record<string, grpc.ServiceClientConstructor | undefined> };
  };
  const service = loaded.onecert.v1[name];
  if (service === undefined) throw new Error(`no service ${name} in ${file}`);
  return service.service;
}
