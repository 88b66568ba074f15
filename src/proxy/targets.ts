// The targets of one upstream and which one gets a request: weighted round robin (smooth, as nginx does it), fewest
// requests in flight per weight, or rendezvous hashing on the authenticated principal. Passive health takes a target that
// keeps failing out for a while (a back-off that doubles, then one try decides); active health (health.ts) takes out one
// that fails its checks and puts it back, also out of a passive ejection, once it passes them: requests go to the ones
// that answer.

export type Balance = 'round_robin' | 'least_outstanding' | 'principal_hash';

export interface PassiveHealth {
  /** Failures in a row (no connection, timeout, 502/503/504) that take a target out. */
  readonly consecutiveFailures: number;
  /** The circuit breaker: this share of failures among at least minRequests within windowMs takes a target out too. */
  readonly failureRate: number;
  readonly windowMs: number;
  readonly minRequests: number;
  /** The first ejection; each following one without a success in between lasts twice as long, up to maxEjectionMs. */
  readonly ejectionMs: number;
  readonly maxEjectionMs: number;
}

export interface ActiveHealth {
  readonly healthyAfter: number;
  readonly unhealthyAfter: number;
}

export class Target<Pool = unknown> {
  /** The last active checks said it serves (true until they say otherwise). */
  healthy = true;
  private checksInARow = 0;
  /** Requests sent to it and not yet finished. */
  inFlight = 0;
  /** Smooth weighted round robin's running weight. */
  current = 0;
  private failures = 0;
  /** Ejections since the last success: the next one lasts 2^n times the first, and one failure after one re-ejects. */
  private ejections = 0;
  /** Epoch ms until which no request is sent to it. */
  ejectedUntil = 0;
  /** The circuit breaker's window: requests and failures per tenth of it, the oldest tenth overwritten as time goes on. */
  private readonly requests = new Array<number>(10).fill(0);
  private readonly errors = new Array<number>(10).fill(0);
  private bucketAt = 0;

  constructor(
    /** `http://10.0.0.1:8080`: where the connections go. */
    readonly origin: string,
    /** `10.0.0.1:8080`, `[::1]:8080`: the target in logs and records. */
    readonly authority: string,
    readonly weight: number,
    readonly pool: Pool,
    /** The Host header it gets: its authority, or the host name it was resolved from (`svc.internal:8080`). */
    readonly hostHeader = authority,
    /** The host name its certificate is checked against, when it was resolved from one. */
    readonly serverName?: string,
  ) {}

  /**
   * Whether a request may go to it now. Back from an ejection (half-open), it takes one request at a time until one
   * succeeds: a target that still hangs holds one request, not its whole share of the traffic.
   */
  isAvailable(now: number): boolean {
    return this.healthy && now >= this.ejectedUntil && (this.ejections === 0 || this.inFlight === 0);
  }

  /**
   * One active check's result; answers the change it made, if any. Enough good checks in a row put a target that is out
   * back, also out of a passive ejection (its next failure still ejects it again at once); enough bad ones in a row take a
   * target that is in out. Only results that would change something make a run.
   */
  checked(ok: boolean, rules: ActiveHealth, now: number): 'healthy' | 'unhealthy' | undefined {
    const out = !this.healthy || now < this.ejectedUntil;
    if (ok !== out) {
      this.checksInARow = 0;
      return undefined;
    }
    if (++this.checksInARow < (ok ? rules.healthyAfter : rules.unhealthyAfter)) return undefined;
    this.checksInARow = 0;
    if (!ok) {
      this.healthy = false;
      return 'unhealthy';
    }
    this.healthy = true;
    this.ejectedUntil = 0;
    this.failures = 0;
    return 'healthy';
  }

  succeeded(now = 0, health?: PassiveHealth): void {
    this.failures = 0;
    this.ejections = 0;
    if (health !== undefined) this.count(now, health, false);
  }

  /**
   * Counts a failure; true when it took the target out: the consecutive failures reached, the failure rate of the window
   * reached (the circuit opens), or the first failure of a target back from an ejection (the half-open probe failed).
   */
  failed(now: number, health: PassiveHealth): boolean {
    this.failures++;
    const rate = this.count(now, health, true);
    if (this.failures < (this.ejections > 0 ? 1 : health.consecutiveFailures) && rate < health.failureRate) return false;
    this.failures = 0;
    this.requests.fill(0);
    this.errors.fill(0);
    const ms = Math.min(health.maxEjectionMs, health.ejectionMs * 2 ** Math.min(this.ejections, 30));
    this.ejections++;
    this.ejectedUntil = now + ms;
    return true;
  }

  /** Adds one outcome to the window; answers the share of failures in it, 0 while it holds fewer than minRequests. */
  private count(now: number, health: PassiveHealth, failed: boolean): number {
    const width = health.windowMs / 10;
    const bucket = Math.floor(now / width);
    // Tenths that passed since the last outcome are emptied (all of them after a long quiet).
    for (let b = Math.max(this.bucketAt + 1, bucket - 9); b <= bucket; b++) {
      this.requests[b % 10] = 0;
      this.errors[b % 10] = 0;
    }
    if (bucket > this.bucketAt) this.bucketAt = bucket;
    const slot = this.bucketAt % 10;
    this.requests[slot] = (this.requests[slot] ?? 0) + 1;
    if (failed) this.errors[slot] = (this.errors[slot] ?? 0) + 1;
    let total = 0;
    let errors = 0;
    for (let i = 0; i < 10; i++) {
      total += this.requests[i] ?? 0;
      errors += this.errors[i] ?? 0;
    }
    return total < health.minRequests ? 0 : errors / total;
  }
}

/** Retries of one upstream: each spends a token, each request earns a fraction of one, up to a burst kept in reserve. */
export class RetryBudget {
  private tokens: number;

  constructor(
    private readonly ratio: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }

  /** A request was sent (not a retry). */
  earn(): void {
    this.tokens = Math.min(this.burst, this.tokens + this.ratio);
  }

  /** Gives back a token taken for a retry that found no target. */
  refund(): void {
    this.tokens = Math.min(this.burst, this.tokens + 1);
  }

  /** Spends a token for a retry; false when none is left. */
  take(): boolean {
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** FNV-1a over the text, then murmur3's finalizer, so close inputs land far apart: 32 bits. */
function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class Balancer<Pool = unknown> {
  private rotation = 0;

  constructor(
    /** The targets now (DNS may change them: replace()). */
    public targets: readonly Target<Pool>[],
    private readonly balance: Balance,
    private readonly now: () => number = Date.now,
    /** How often active checks run: when a target they took out may come back, at the soonest. */
    private readonly checkIntervalMs = 0,
  ) {}

  /**
   * The target for the next request (`principal`: the authenticated subject, for `principal_hash`), never one in
   * `tried`; undefined when every other target is ejected.
   */
  pick(principal: string | undefined, tried?: ReadonlySet<Target<Pool>>): Target<Pool> | undefined {
    const now = this.now();
    const candidates = this.targets.filter((target) => target.isAvailable(now) && tried?.has(target) !== true);
    if (candidates.length <= 1) return candidates[0];
    if (this.balance === 'principal_hash' && principal !== undefined) return this.rendezvous(principal, candidates);
    if (this.balance === 'least_outstanding') return this.leastOutstanding(candidates);
    return this.smoothRoundRobin(candidates);
  }

  anyAvailable(): boolean {
    const now = this.now();
    return this.targets.some((target) => target.isAvailable(now));
  }

  /** Milliseconds until the first ejected target returns: a Retry-After when none is available. */
  untilFirstReturn(): number {
    const now = this.now();
    return Math.max(0, Math.min(...this.targets.map((target) => (target.healthy ? target.ejectedUntil - now : this.checkIntervalMs))));
  }

  /** Each pick adds every candidate's weight to its running weight and takes the largest, which then gives back the total. */
  private smoothRoundRobin(candidates: readonly Target<Pool>[]): Target<Pool> {
    let total = 0;
    let best = candidates[0] as Target<Pool>;
    for (const target of candidates) {
      target.current += target.weight;
      total += target.weight;
      if (target.current > best.current) best = target;
    }
    best.current -= total;
    return best;
  }

  /** The fewest requests in flight per unit of weight; ties go round in turn. */
  private leastOutstanding(candidates: readonly Target<Pool>[]): Target<Pool> {
    const start = this.rotation++ % candidates.length;
    let best: Target<Pool> | undefined;
    let bestLoad = Number.POSITIVE_INFINITY;
    for (let i = 0; i < candidates.length; i++) {
      const target = candidates[(start + i) % candidates.length] as Target<Pool>;
      const load = target.inFlight / target.weight;
      if (load < bestLoad) {
        best = target;
        bestLoad = load;
      }
    }
    return best as Target<Pool>;
  }

  /**
   * Weighted rendezvous hashing: every (principal, target) pair gets a score and the highest wins, so a principal keeps its
   * target while that target is available, and only the principals of a target that leaves move.
   */
  private rendezvous(principal: string, candidates: readonly Target<Pool>[]): Target<Pool> {
    let best = candidates[0] as Target<Pool>;
    let bestScore = Number.NEGATIVE_INFINITY;
    for (const target of candidates) {
      const unit = (hash32(`${principal}\n${target.origin}`) + 0.5) / 2 ** 32;
      const score = target.weight / -Math.log(unit);
      if (score > bestScore) {
        best = target;
        bestScore = score;
      }
    }
    return best;
  }
}
