// Warrants and Security Event Tokens, checked as docs/contract.md says
// (sections 3 and 7), with jose for the JWS signature and nothing else.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  compactVerify,
  decodeProtectedHeader,
  importJWK,
  type JWK,
  type KeyLike,
} from "jose";

export const WARRANT_TYP = "onecert-warrant+jwt";
export const SET_TYP = "secevent+jwt";
export const RISC_RECYCLED =
  "https://schemas.openid.net/secevent/risc/event-type/identifier-recycled";
const E164 = /^\+[1-9][0-9]{7,14}$/;
// W-9, E-9: at most 10 s of clock skew; 5 s is the recommended value.
const SKEW_S = 5;
const MAX_WARRANT_LIFETIME_S = 60; // W-11
const MAX_SET_AGE_S = 300; // E-9

/** Why a token was refused: `invalid` (not a SET at all) or `untrusted`. */
export class TokenRefused extends Error {
  constructor(
    readonly kind: "invalid" | "untrusted",
    message: string,
  ) {
    super(message);
  }
}

interface GatewayKey {
  key: KeyLike | Uint8Array;
  alg: string;
}

/** The gateway's keys by kid, from the JWKS handed over at onboarding (W-18). */
export async function loadGatewayKeys(path: string): Promise<Map<string, GatewayKey>> {
  const jwks = JSON.parse(readFileSync(path, "utf8")) as { keys: JWK[] };
  const keys = new Map<string, GatewayKey>();
  for (const jwk of jwks.keys) {
    // W-5: the algorithm follows from the key, never from a token.
    const alg =
      jwk.kty === "OKP" && jwk.crv === "Ed25519"
        ? "EdDSA"
        : jwk.kty === "EC" && jwk.crv === "P-256"
          ? "ES256"
          : undefined;
    if (alg === undefined || jwk.alg !== alg || typeof jwk.kid !== "string") {
      throw new Error(`unusable gateway key ${String(jwk.kid)}`);
    }
    keys.set(jwk.kid, { key: await importJWK(jwk, alg), alg });
  }
  if (keys.size === 0) throw new Error("the gateway JWKS holds no key");
  return keys;
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

type Claims = Record<string, unknown>;

function isNumber(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

function audienceOk(aud: unknown, me: string): boolean {
  // W-8, E-6: a string equal to our id, or an array holding it.
  return aud === me || (Array.isArray(aud) && aud.includes(me));
}

/** Checks the gateway's tokens addressed to this provider. */
export class Verifier {
  constructor(
    private readonly keys: Map<string, GatewayKey>,
    private readonly issuer: string,
    private readonly audience: string,
  ) {}

  // A token that is not a JWS is `kind`: untrusted for a warrant (W-2),
  // invalid for a notice (E-2).
  private header(token: string, kind: "invalid" | "untrusted"): Record<string, unknown> {
    try {
      return decodeProtectedHeader(token) as Record<string, unknown>;
    } catch {
      throw new TokenRefused(kind, "not a JWS in compact form");
    }
  }

  /** Check the kid, the key's own algorithm and the signature; the claims. */
  private async signed(token: string, header: Record<string, unknown>): Promise<Claims> {
    const kid = header.kid;
    const key = typeof kid === "string" ? this.keys.get(kid) : undefined;
    if (key === undefined) throw new TokenRefused("untrusted", "unknown or missing kid"); // W-4
    let payload: Uint8Array;
    try {
      // `algorithms` pins the key's algorithm (W-5); jose refuses an
      // unknown `crit` member (W-16).
      ({ payload } = await compactVerify(token, key.key, { algorithms: [key.alg] }));
    } catch {
      throw new TokenRefused("untrusted", "signature does not verify"); // W-6
    }
    let claims: unknown;
    try {
      claims = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      throw new TokenRefused("invalid", "the payload is not JSON");
    }
    if (typeof claims !== "object" || claims === null || Array.isArray(claims)) {
      throw new TokenRefused("invalid", "the payload is not a JSON object");
    }
    return claims as Claims;
  }

  /** W-1 to W-17: throw unless `token` allows `purpose` on `target`. */
  async warrant(
    token: string,
    target: string,
    purpose: string,
    now: number = Date.now() / 1000,
  ): Promise<void> {
    const header = this.header(token, "untrusted");
    if (header.typ !== WARRANT_TYP) throw new TokenRefused("untrusted", "not a warrant"); // W-3
    const claims = await this.signed(token, header);
    if (claims.iss !== this.issuer) throw new TokenRefused("untrusted", "wrong issuer"); // W-7
    if (!audienceOk(claims.aud, this.audience)) {
      throw new TokenRefused("untrusted", "meant for another audience"); // W-8
    }
    const { iat, exp, nbf } = claims;
    if (!isNumber(iat) || iat > now + SKEW_S) {
      throw new TokenRefused("untrusted", "iat missing or in the future"); // W-10
    }
    if (!isNumber(exp) || exp - iat > MAX_WARRANT_LIFETIME_S) {
      throw new TokenRefused("untrusted", "exp missing or lifetime over 60 s"); // W-11
    }
    if (now > exp + SKEW_S) throw new TokenRefused("untrusted", "expired"); // W-9
    if (nbf !== undefined && (!isNumber(nbf) || now + SKEW_S < nbf)) {
      throw new TokenRefused("untrusted", "not valid yet"); // W-9
    }
    if (typeof claims.jti !== "string" || claims.jti === "") {
      throw new TokenRefused("untrusted", "no jti"); // W-12
    }
    if (claims.purpose !== purpose) {
      throw new TokenRefused("untrusted", "a warrant for another purpose"); // W-13
    }
    if (claims.target_sha256 !== sha256Hex(target)) {
      throw new TokenRefused("untrusted", "it does not cover this number"); // W-14
    }
    // W-15, W-16, W-17: qid not required, other claims ignored, no jti cache.
  }

  /** E-2 to E-9: the notice's jti and msisdn, or throw. */
  async notice(
    token: string,
    now: number = Date.now() / 1000,
  ): Promise<{ jti: string; msisdn: string }> {
    const header = this.header(token, "invalid"); // E-2
    if (header.typ !== SET_TYP) throw new TokenRefused("invalid", "not a SET"); // E-3
    const claims = await this.signed(token, header); // E-4
    for (const name of ["iss", "aud", "iat", "jti", "toe", "events"]) {
      if (!(name in claims)) throw new TokenRefused("invalid", `SET lacks ${name}`); // E-8
    }
    const events = claims.events;
    const event =
      typeof events === "object" && events !== null
        ? (events as Record<string, unknown>)[RISC_RECYCLED]
        : undefined;
    const subject =
      typeof event === "object" && event !== null
        ? (event as Record<string, unknown>).subject
        : undefined;
    const phone =
      typeof subject === "object" && subject !== null
        ? (subject as Record<string, unknown>)
        : undefined;
    if (
      typeof events !== "object" ||
      events === null ||
      Object.keys(events).length !== 1 ||
      phone === undefined ||
      phone.format !== "phone_number" ||
      typeof phone.phone_number !== "string" ||
      !E164.test(phone.phone_number)
    ) {
      throw new TokenRefused("invalid", "not exactly one identifier-recycled event"); // E-7
    }
    if (typeof claims.jti !== "string" || claims.jti === "" || claims.jti.length > 256) {
      throw new TokenRefused("invalid", "jti must be 1 to 256 characters"); // E-8
    }
    if (claims.iss !== this.issuer) throw new TokenRefused("untrusted", "wrong issuer"); // E-5
    if (!audienceOk(claims.aud, this.audience)) {
      throw new TokenRefused("untrusted", "meant for another provider"); // E-6
    }
    const { iat, exp } = claims;
    if (!isNumber(iat) || iat > now + SKEW_S || now - iat > MAX_SET_AGE_S + SKEW_S) {
      throw new TokenRefused("untrusted", "too old or issued in the future"); // E-9
    }
    if (exp !== undefined && (!isNumber(exp) || now > exp + SKEW_S)) {
      throw new TokenRefused("untrusted", "expired"); // E-9
    }
    return { jti: claims.jti, msisdn: phone.phone_number };
  }
}

export function isE164(value: string): boolean {
  return E164.test(value);
}
