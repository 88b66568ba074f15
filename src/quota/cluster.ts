// Limits shared by the workers of one gateway (`serve --workers N`) without Redis: the primary counts for all of them in its
// memory and each worker asks it over the cluster's IPC channel, so N workers never admit N × a limit. Nothing of this is
// on the primary's own path but the counting: it holds no request.
//
// A worker whose question goes unanswered (the primary stalled or gone) follows the limiter's outage policy, exactly as
// with Redis (backend.ts). A slot the primary granted stays held until the worker releases it or is gone: the primary
// frees every slot of a worker that exits, and a grant that arrives after the worker stopped waiting is handed back.
import { performance } from 'node:perf_hooks';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { LimiterUnavailable, SharedLimiterBackend, type ConsumeStore, type SharedStore, type StoreSpec } from './backend.js';
import { MemoryCalendarCounter, type CalendarPeriod, type CalendarSpec } from './calendar.js';
import { MemorySlots, type SlotLease, type Slots } from './slots.js';

/** One end of the IPC channel between the primary and a worker (the CLI adapts `process` and cluster's Worker). */
export interface LimiterChannel {
  /** Sends one message; false when the channel is closed. */
  send(message: LimiterMessage): boolean;
  onMessage(listener: (message: unknown) => void): void;
  /** The other end is gone. */
  onClose(listener: () => void): void;
}

interface SlotsSpec {
  readonly keyPrefix: string;
  readonly max: number;
}

type Definition =
  | { readonly kind: 'window'; readonly spec: StoreSpec }
  | { readonly kind: 'calendar'; readonly spec: CalendarSpec }
  | { readonly kind: 'slots'; readonly spec: SlotsSpec };

type Call =
  | { readonly op: 'consume'; readonly limiter: number; readonly key: string; readonly points: number; readonly period?: CalendarPeriod }
  | { readonly op: 'get' | 'delete' | 'acquire'; readonly limiter: number; readonly key: string }
  | { readonly op: 'block'; readonly limiter: number; readonly key: string; readonly seconds: number };

/** A RateLimiterRes as it crosses the channel. */
interface ResFields {
  readonly remainingPoints: number;
  readonly msBeforeNext: number;
  readonly consumedPoints: number;
  readonly isFirstInDuration: boolean;
}

type Answer =
  | { readonly outcome: 'res'; readonly res: ResFields | null }
  | { readonly outcome: 'limited'; readonly res: ResFields }
  | { readonly outcome: 'deleted'; readonly deleted: boolean }
  | { readonly outcome: 'lease'; readonly lease: number | null; readonly remaining: number }
  | { readonly outcome: 'failed' };

type Single =
  | { readonly gatehouse: 'limiter.define'; readonly limiter: number; readonly definition: Definition }
  | ({ readonly gatehouse: 'limiter.call'; readonly id: number } & Call)
  | { readonly gatehouse: 'limiter.release'; readonly lease: number }
  | ({ readonly gatehouse: 'limiter.answer'; readonly id: number } & Answer);

export type LimiterMessage = Single | { readonly gatehouse: 'limiter.batch'; readonly messages: readonly Single[] };

function isMessage(message: unknown): message is LimiterMessage {
  return typeof message === 'object' && message !== null && 'gatehouse' in message && typeof message.gatehouse === 'string';
}

/**
 * What one end sends in one turn of its event loop goes as one message: under load a worker asks about many requests at
 * once, and each IPC message costs both processes a write, a read and a parse whatever it holds.
 */
class Outbox {
  private queue: Single[] = [];
  private scheduled = false;
  private open = true;

  constructor(private readonly channel: LimiterChannel) {
    channel.onClose(() => {
      this.open = false;
    });
  }

  /** False when the channel is closed (the message is not sent). */
  send(message: Single): boolean {
    if (!this.open) return false;
    this.queue.push(message);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  private flush(): void {
    this.scheduled = false;
    const messages = this.queue;
    this.queue = [];
    this.channel.send(messages.length === 1 ? (messages[0] as Single) : { gatehouse: 'limiter.batch', messages });
  }
}

/** Each message of a batch (or the one message), to `listener`. */
function unbatched(listener: (message: Single) => void): (message: unknown) => void {
  return (message) => {
    if (!isMessage(message)) return;
    if (message.gatehouse !== 'limiter.batch') listener(message);
    else if (Array.isArray(message.messages)) for (const each of message.messages) if (isMessage(each) && each.gatehouse !== 'limiter.batch') listener(each);
  };
}

const fields = (res: RateLimiterRes): ResFields => ({
  remainingPoints: res.remainingPoints,
  msBeforeNext: res.msBeforeNext,
  consumedPoints: res.consumedPoints,
  isFirstInDuration: res.isFirstInDuration,
});
const toRes = (f: ResFields): RateLimiterRes => new RateLimiterRes(f.remainingPoints, f.msBeforeNext, f.consumedPoints, f.isFirstInDuration);

type Held =
  | { readonly kind: 'window'; readonly limiter: RateLimiterMemory }
  | { readonly kind: 'calendar'; readonly counter: MemoryCalendarCounter }
  | { readonly kind: 'slots'; readonly slots: MemorySlots };

/**
 * The primary's side: one set of in-memory limiters, shared by every worker that defines the same one (the same spec), so
 * a key counts once however many workers its requests reach.
 */
export class ClusterLimiterHost {
  private readonly limiters = new Map<string, Held>();
  private serial = 0;

  /** Slots held by all workers together (0 once their requests ended). */
  get heldSlots(): number {
    let held = 0;
    for (const limiter of this.limiters.values()) if (limiter.kind === 'slots') held += limiter.slots.held;
    return held;
  }

  /** Answers one worker's calls; the returned function frees everything the worker held (call it when the worker is gone). */
  serve(channel: LimiterChannel): () => void {
    const defined = new Map<number, Held>();
    const leases = new Map<number, SlotLease>();
    const outbox = new Outbox(channel);
    const answer = (id: number, value: Answer): void => {
      outbox.send({ gatehouse: 'limiter.answer', id, ...value });
    };
    channel.onMessage(
      unbatched((message) => {
        switch (message.gatehouse) {
          case 'limiter.define':
            defined.set(message.limiter, this.define(message.definition));
            return;
          case 'limiter.release':
            leases.get(message.lease)?.release();
            leases.delete(message.lease);
            return;
          case 'limiter.call': {
            const held = defined.get(message.limiter);
            if (held === undefined) answer(message.id, { outcome: 'failed' });
            else this.call(held, message, leases).then((value) => answer(message.id, value));
            return;
          }
          default:
            return;
        }
      }),
    );
    return () => {
      for (const lease of leases.values()) lease.release();
      leases.clear();
      defined.clear();
    };
  }

  private define(definition: Definition): Held {
    const { kind, spec } = definition;
    const name = `${kind} ${JSON.stringify(spec)}`;
    const existing = this.limiters.get(name);
    if (existing !== undefined) return existing;
    let held: Held;
    if (kind === 'window') {
      const { keyPrefix, points, duration, blockDuration } = spec;
      held = { kind, limiter: new RateLimiterMemory({ keyPrefix, points, duration, blockDuration: blockDuration ?? 0 }) };
    } else if (kind === 'calendar') held = { kind, counter: new MemoryCalendarCounter(spec) };
    else held = { kind, slots: new MemorySlots(spec.max) };
    this.limiters.set(name, held);
    return held;
  }

  private async call(held: Held, call: Call, leases: Map<number, SlotLease>): Promise<Answer> {
    try {
      if (held.kind === 'slots') {
        if (call.op !== 'acquire') return { outcome: 'failed' };
        const lease = held.slots.acquire(call.key);
        if (lease === undefined) return { outcome: 'lease', lease: null, remaining: 0 };
        const id = ++this.serial;
        leases.set(id, lease);
        return { outcome: 'lease', lease: id, remaining: lease.remaining };
      }
      if (held.kind === 'calendar') {
        if (call.op !== 'consume' || call.period === undefined) return { outcome: 'failed' };
        return { outcome: 'res', res: fields(await held.counter.consume(call.key, call.points, call.period)) };
      }
      const { limiter } = held;
      switch (call.op) {
        case 'consume':
          return { outcome: 'res', res: fields(await limiter.consume(call.key, call.points)) };
        case 'get': {
          const res = await limiter.get(call.key);
          return { outcome: 'res', res: res === null ? null : fields(res) };
        }
        case 'block':
          return { outcome: 'res', res: fields(await limiter.block(call.key, call.seconds)) };
        case 'delete':
          return { outcome: 'deleted', deleted: await limiter.delete(call.key) };
        default:
          return { outcome: 'failed' };
      }
    } catch (verdict) {
      return verdict instanceof RateLimiterRes ? { outcome: 'limited', res: fields(verdict) } : { outcome: 'failed' };
    }
  }
}

interface Pending {
  readonly resolve: (answer: Answer) => void;
  readonly reject: (error: Error) => void;
  readonly deadline: number;
}

/** The worker's side of the channel: numbered calls, each answered or failed within the timeout. */
class ClusterClient {
  private readonly pending = new Map<number, Pending>();
  private readonly outbox: Outbox;
  private serial = 0;
  private definitions = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;
  /** Since when (performance.now()) the primary has let a call go unanswered; undefined while it answers. */
  private silentSince: number | undefined;

  constructor(
    channel: LimiterChannel,
    private readonly timeoutMs: number,
    /** Told when the primary first leaves a call unanswered (false), and when it answers again (true, after how long). */
    private readonly onPrimaryState: ((answering: boolean, silentMs: number) => void) | undefined = undefined,
  ) {
    this.outbox = new Outbox(channel);
    channel.onMessage(unbatched((message) => this.receive(message)));
    channel.onClose(() => {
      this.closed = true;
      this.failAll(() => true);
    });
  }

  define(definition: Definition): number {
    const limiter = ++this.definitions;
    this.outbox.send({ gatehouse: 'limiter.define', limiter, definition });
    return limiter;
  }

  release(lease: number): void {
    if (!this.closed) this.outbox.send({ gatehouse: 'limiter.release', lease });
  }

  call(call: Call): Promise<Answer> {
    if (this.closed) return Promise.reject(new Error('the primary is gone'));
    const id = ++this.serial;
    return new Promise((resolve, reject) => {
      if (!this.outbox.send({ gatehouse: 'limiter.call', id, ...call })) {
        reject(new Error('the channel to the primary is closed'));
        return;
      }
      this.pending.set(id, { resolve, reject, deadline: performance.now() + this.timeoutMs });
      this.sweeper ??= setInterval(() => this.sweep(), Math.max(10, Math.min(100, this.timeoutMs / 4))).unref();
    });
  }

  private receive(message: Single): void {
    if (message.gatehouse !== 'limiter.answer') return;
    if (this.silentSince !== undefined) {
      const silentMs = Math.round(performance.now() - this.silentSince);
      this.silentSince = undefined;
      this.onPrimaryState?.(true, silentMs);
    }
    const pending = this.pending.get(message.id);
    if (pending !== undefined) {
      this.pending.delete(message.id);
      pending.resolve(message);
    } else if (message.outcome === 'lease' && message.lease !== null) {
      // Granted after this worker stopped waiting (and its request went on under the outage policy): nobody holds it.
      this.release(message.lease);
    }
  }

  private sweep(): void {
    const now = performance.now();
    const before = this.pending.size;
    this.failAll((pending) => pending.deadline <= now);
    // A call went unanswered: the limiters follow their outage policies until the primary answers again (reported once).
    if (this.pending.size < before && this.silentSince === undefined) {
      this.silentSince = now - this.timeoutMs;
      this.onPrimaryState?.(false, 0);
    }
    if (this.pending.size === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private failAll(which: (pending: Pending) => boolean): void {
    for (const [id, pending] of this.pending) {
      if (!which(pending)) continue;
      this.pending.delete(id);
      pending.reject(new Error('no answer from the primary in time'));
    }
  }
}

export interface ClusterLimiterOptions {
  /** How many workers share the limits: each one's share, while the primary cannot answer, is points / workers. */
  readonly workers: number;
  /** How long a worker waits for the primary's answer before its outage policy decides. */
  readonly timeoutMs: number;
  /** Told when the primary first leaves a call unanswered (false), and when it answers again (true, after how long). */
  readonly onPrimaryState?: (answering: boolean, silentMs: number) => void;
}

/** A worker's limiters, counted by the primary. */
export class ClusterLimiterBackend extends SharedLimiterBackend {
  private readonly client: ClusterClient;

  constructor(channel: LimiterChannel, options: ClusterLimiterOptions) {
    super(options.workers);
    this.client = new ClusterClient(channel, options.timeoutMs, options.onPrimaryState);
  }

  protected store(spec: StoreSpec): SharedStore {
    return new RemoteWindow(this.client, this.client.define({ kind: 'window', spec }));
  }

  protected periodWindow(spec: CalendarSpec): (period: CalendarPeriod) => ConsumeStore {
    const limiter = this.client.define({ kind: 'calendar', spec });
    return (period) => ({ consume: (key, points = 1) => this.client.call({ op: 'consume', limiter, key, points, period }).then(verdict) });
  }

  protected storeSlots(spec: SlotsSpec, fallback: Slots | undefined): Slots {
    return new RemoteSlots(this.client, this.client.define({ kind: 'slots', spec }), fallback);
  }
}

/** A consume's answer: the state, or the over-the-limit verdict thrown, or a failure the outage policy handles. */
function verdict(answer: Answer): RateLimiterRes {
  if (answer.outcome === 'res' && answer.res !== null) return toRes(answer.res);
  if (answer.outcome === 'limited') throw toRes(answer.res);
  throw new Error('the primary could not count');
}

class RemoteWindow implements SharedStore {
  constructor(
    private readonly client: ClusterClient,
    private readonly limiter: number,
  ) {}

  consume(key: string, points = 1): Promise<RateLimiterRes> {
    return this.client.call({ op: 'consume', limiter: this.limiter, key, points }).then(verdict);
  }

  async get(key: string): Promise<RateLimiterRes | null> {
    const answer = await this.client.call({ op: 'get', limiter: this.limiter, key });
    if (answer.outcome !== 'res') throw new Error('the primary could not read');
    return answer.res === null ? null : toRes(answer.res);
  }

  block(key: string, seconds: number): Promise<RateLimiterRes> {
    return this.client.call({ op: 'block', limiter: this.limiter, key, seconds }).then(verdict);
  }

  async delete(key: string): Promise<boolean> {
    const answer = await this.client.call({ op: 'delete', limiter: this.limiter, key });
    if (answer.outcome !== 'deleted') throw new Error('the primary could not delete');
    return answer.deleted;
  }
}

/** Slots granted by the primary; `fallback` answers while it cannot (degrade), else acquire() rejects (deny). */
class RemoteSlots implements Slots {
  private leases = 0;

  constructor(
    private readonly client: ClusterClient,
    private readonly limiter: number,
    private readonly fallback: Slots | undefined,
  ) {}

  get held(): number {
    return this.leases + (this.fallback?.held ?? 0);
  }

  async acquire(key: string): Promise<SlotLease | undefined> {
    let answer: Answer;
    try {
      answer = await this.client.call({ op: 'acquire', limiter: this.limiter, key });
      if (answer.outcome !== 'lease') throw new Error('the primary could not grant a slot');
    } catch {
      if (this.fallback === undefined) throw new LimiterUnavailable();
      return this.fallback.acquire(key);
    }
    const { lease } = answer;
    if (lease === null) return undefined;
    this.leases++;
    let released = false;
    return {
      remaining: answer.remaining,
      release: () => {
        if (released) return;
        released = true;
        this.leases--;
        this.client.release(lease);
      },
    };
  }
}
