// The provider's data (a map here; your database in real life), unbinds
// applied once per request_id (U-4 to U-6), notices recorded once per jti (E-10).

export interface UnbindRequest {
  request_id: string;
  msisdn: string;
  account_ref: string;
  reason: string;
}

interface Timestamp {
  seconds: number;
  nanos: number;
}

interface Binding {
  account_ref: string;
  display_name: string;
  kind: string;
  bound_at: Timestamp;
  unbindable: boolean;
}

interface UnbindAnswer {
  outcome: "UNBIND_OUTCOME_DONE" | "UNBIND_OUTCOME_REJECTED";
  reason: string;
  decided_at: Timestamp;
}

const E164 = /^\+[1-9][0-9]{7,14}$/;

function at(iso: string): Timestamp {
  return { seconds: Math.floor(Date.parse(iso) / 1000), nanos: 0 };
}

function now(): Timestamp {
  const ms = Date.now();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

export class Bindings {
  // msisdn -> accounts bound to it; bound_at is the exact instant (L-4).
  private readonly byNumber = new Map<string, Binding[]>([
    [
      "+8613800000001",
      [
        {
          account_ref: "ts-1",
          display_name: "zhangsan",
          kind: "BINDING_KIND_LOGIN",
          bound_at: at("2021-03-01T00:00:00Z"),
          unbindable: true,
        },
        {
          account_ref: "ts-2",
          display_name: "",
          kind: "BINDING_KIND_PAYMENT",
          bound_at: at("2014-06-09T00:00:00Z"),
          unbindable: false,
        },
      ],
    ],
    [
      "+8613800000002",
      [
        {
          account_ref: "ts-3",
          display_name: "lisi",
          kind: "BINDING_KIND_TWO_FACTOR",
          bound_at: at("2022-02-02T00:00:00Z"),
          unbindable: true,
        },
      ],
    ],
  ]);
  // request_id -> the unbind it named and the answer given (keep 7 days or more: U-9).
  private readonly answers = new Map<string, { fingerprint: string; answer: UnbindAnswer }>();
  // jti -> the answer given to the notice.
  private readonly notices = new Map<string, { acknowledged: boolean }>();

  list(msisdn: string): Binding[] {
    return this.byNumber.get(msisdn) ?? [];
  }

  // Node runs this without interruption, so duplicates arriving at once
  // see the first one's answer (U-5); a server with real concurrency
  // needs a lock or a unique key on request_id here.
  unbind(request: UnbindRequest): UnbindAnswer | { invalid: string } {
    const { request_id, msisdn, account_ref, reason } = request;
    if (request_id.length < 1 || request_id.length > 128) {
      return { invalid: "request_id must be 1 to 128 characters" };
    }
    if (account_ref.length < 1 || account_ref.length > 256) {
      return { invalid: "account_ref must be 1 to 256 characters" };
    }
    if (reason === "UNBIND_REASON_UNSPECIFIED" || /^\d+$/.test(reason)) {
      return { invalid: "reason is required" };
    }
    if (!E164.test(msisdn)) return { invalid: "msisdn must be E.164" };
    const fingerprint = JSON.stringify([msisdn, account_ref, reason]);
    const seen = this.answers.get(request_id);
    if (seen !== undefined) {
      if (seen.fingerprint !== fingerprint) {
        return { invalid: "request_id was already used for a different unbind" }; // U-6
      }
      return seen.answer; // U-4
    }
    const bound = this.list(msisdn);
    const kept = bound.filter((b) => b.account_ref !== account_ref);
    let answer: UnbindAnswer;
    if (kept.length === bound.length) {
      // U-2, U-3: REJECTED with a reason that names nobody.
      answer = { outcome: "UNBIND_OUTCOME_REJECTED", reason: "no such account", decided_at: now() };
    } else {
      this.byNumber.set(msisdn, kept); // U-7
      answer = { outcome: "UNBIND_OUTCOME_DONE", reason: "", decided_at: now() };
    }
    this.answers.set(request_id, { fingerprint, answer });
    return answer;
  }

  receive(notice: { jti: string; msisdn: string }): { acknowledged: boolean } {
    // The notices of this example name numbers it does not hold; a real
    // provider records the notice durably (E-11) and detaches the number
    // from accounts bound before `toe` (E-12).
    const seen = this.notices.get(notice.jti);
    if (seen !== undefined) return seen;
    const answer = { acknowledged: true };
    this.notices.set(notice.jti, answer);
    return answer;
  }
}
