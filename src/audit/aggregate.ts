// LOG-08: a flood of refusals must not fill the disk, and must not vanish either. Per window, each source (client
// address, the subject it claimed, the refusal code and the route) has its first `after` refusals recorded one by one;
// the rest are counted, exactly, and written as one `refusals_aggregated` record when the window ends. Sources are
// bounded: past `maxSources` in one window, new ones share one bucket per code and route (client_ip "*"). So a window
// writes at most maxSources × after individual refusals, whatever the flood, and every refusal is counted in the chain.
import type { AuditEvent } from './event.js';

export interface AggregationSettings {
  /** Refusals of one source recorded individually per window. */
  readonly after: number;
  readonly windowMs: number;
  /** Sources tracked per window; the rest share per-code buckets. */
  readonly maxSources: number;
}

interface Bucket {
  readonly clientIp: string;
  readonly subject: string | null;
  readonly code: string | null;
  readonly route: string | null;
  readonly stage: string;
  readonly status: number | null;
  /** The bucket of newcomers past maxSources: nothing of it is recorded individually. */
  readonly shared: boolean;
  individual: number;
  suppressed: number;
  firstMs: number;
  lastMs: number;
  lastRequestId: string;
}

/** The members of a refusals_aggregated record. */
export type AggregatedRefusals = Readonly<Record<string, string | number | null>>;

export class RefusalAggregator {
  private buckets = new Map<string, Bucket>();

  constructor(private readonly settings: AggregationSettings) {}

  get windowMs(): number {
    return this.settings.windowMs;
  }

  /** True when this refusal is to be written as its own record; false when it was counted into its source's aggregate. */
  admit(event: AuditEvent, now: number): boolean {
    const key = `${event.client_ip}\n${event.subject ?? ''}\n${event.code ?? ''}\n${event.route ?? ''}`;
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size < this.settings.maxSources) {
        bucket = newBucket(event, event.client_ip, event.subject, false, now);
        this.buckets.set(key, bucket);
      } else {
        // Too many sources this window: this one is counted with every other newcomer refused with the same code there.
        const shared = `*\n\n${event.code ?? ''}\n${event.route ?? ''}`;
        bucket = this.buckets.get(shared);
        if (bucket === undefined) {
          bucket = newBucket(event, '*', null, true, now);
          this.buckets.set(shared, bucket);
        }
      }
    }
    if (bucket.individual < this.settings.after) {
      bucket.individual++;
      return true;
    }
    if (bucket.suppressed === 0) bucket.firstMs = now;
    bucket.suppressed++;
    bucket.lastMs = now;
    bucket.lastRequestId = event.request_id;
    return false;
  }

  /** Ends the window: the aggregate of every source that had refusals counted, and a fresh window for all. */
  drain(): AggregatedRefusals[] {
    const out: AggregatedRefusals[] = [];
    for (const bucket of this.buckets.values()) {
      if (bucket.suppressed === 0) continue;
      out.push({
        client_ip: bucket.clientIp,
        subject: bucket.subject,
        code: bucket.code,
        route: bucket.route,
        stage: bucket.stage,
        status: bucket.status,
        count: bucket.suppressed,
        first_ts: new Date(bucket.firstMs).toISOString(),
        last_ts: new Date(bucket.lastMs).toISOString(),
        last_request_id: bucket.lastRequestId,
        recorded_individually: bucket.shared ? 0 : bucket.individual,
      });
    }
    this.buckets = new Map();
    return out;
  }
}

function newBucket(event: AuditEvent, clientIp: string, subject: string | null, shared: boolean, now: number): Bucket {
  return {
    shared,
    clientIp,
    subject,
    code: event.code,
    route: event.route,
    stage: event.stage,
    status: event.status,
    // A shared bucket starts full: every refusal counted into it is aggregated.
    individual: shared ? Number.POSITIVE_INFINITY : 0,
    suppressed: 0,
    firstMs: now,
    lastMs: now,
    lastRequestId: event.request_id,
  };
}
