// The access log: one line per request, after its answer ends, in the format of the gateway's other log lines (pino's
// JSON lines) and on the same destination. The line is built here rather than by pino's generic serializer: every
// request writes one, and pino's path (level and hook checks, serializers per key, a string stream) cost about a tenth
// of the gateway's CPU per proxied request (bench/). The fields are fixed and typed, so the line is too.
import { pino, type Logger } from 'pino';

/** What the access log says of a request. Never a query string, header or body: they may carry credentials. */
export interface AccessEntry {
  readonly requestId: string;
  readonly method: string | undefined;
  readonly path: string | undefined;
  readonly route: string | undefined;
  readonly status: number;
  /** The answer was written whole (false: the client left or the response was cut). */
  readonly completed: boolean;
  readonly durationMs: number;
  readonly clientIp: string;
  readonly protocol: 'h1' | 'h2';
}

interface LineSink {
  write(line: string): unknown;
}

export class AccessLog {
  /** pino's destination and its bindings (`,"service":"gatehouse"`), when the logger exposes them; else lines go through pino. */
  private readonly direct: { readonly sink: LineSink; readonly bindings: string } | undefined;

  constructor(private readonly log: Logger) {
    const internals = log as unknown as Record<symbol, unknown>;
    const sink = internals[pino.symbols.streamSym];
    const bindings = internals[pino.symbols.chindingsSym];
    const writable = typeof sink === 'object' && sink !== null && typeof (sink as Partial<LineSink>).write === 'function';
    this.direct = writable && typeof bindings === 'string' && log.levels.values['info'] === 30 ? { sink: sink as LineSink, bindings } : undefined;
  }

  write(entry: AccessEntry): void {
    if (!this.log.isLevelEnabled('info')) return;
    const durationMs = Math.round(entry.durationMs * 100) / 100;
    if (this.direct === undefined) {
      this.log.info(fields(entry, durationMs), 'request');
      return;
    }
    // The same keys, order and encoding as the pino line below would have: strings through JSON.stringify.
    this.direct.sink.write(
      `{"level":30,"time":${Date.now()}${this.direct.bindings},"request_id":${JSON.stringify(entry.requestId)},"method":${text(entry.method)},` +
        `"path":${text(entry.path)},"route":${text(entry.route)},"status":${entry.status},"completed":${entry.completed},` +
        `"duration_ms":${durationMs},"client_ip":${JSON.stringify(entry.clientIp)},"protocol":"${entry.protocol}","msg":"request"}\n`,
    );
  }
}

function text(value: string | undefined): string {
  return value === undefined ? 'null' : JSON.stringify(value);
}

function fields(entry: AccessEntry, durationMs: number): Record<string, unknown> {
  return {
    request_id: entry.requestId,
    method: entry.method ?? null,
    path: entry.path ?? null,
    route: entry.route ?? null,
    status: entry.status,
    completed: entry.completed,
    duration_ms: durationMs,
    client_ip: entry.clientIp,
    protocol: entry.protocol,
  };
}
