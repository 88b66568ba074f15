// Benchmark only: the gateway of `gatehouse serve --config FILE`, started by the same few lines either with its real
// audit log (`--audit`) or with a sink that keeps nothing, so one run can measure what the hash-chained, group-committed
// log costs between two processes that differ in nothing else. Never a product switch: the gateway itself always records
// (the AuditSink is injected here, as tests do).
import 'reflect-metadata';
import { pino } from 'pino';
import { type AuditEvent, type AuditRecord, type AuditSink, decisionRecordOf } from '../src/audit/event.js';
import { loadConfigFile } from '../src/config/load.js';
import { Gateway } from '../src/gateway.js';

/**
 * Keeps nothing, but releases the requests of one event-loop turn together on the next, as the real log's group commit
 * does after its write: the two variants then differ in the chain and its I/O only, not in when requests go on.
 */
class DiscardingSink implements AuditSink {
  readonly ready = true;
  private seq = 0;
  private turn: Promise<void> | undefined;
  append(event: AuditEvent): AuditRecord {
    // Built as the real log builds its record (an object spread would cost several microseconds by itself, charged to the
    // variant without a chain).
    return Object.assign(decisionRecordOf({ seq: ++this.seq, ts: '', instance: 'bench', boot_id: '', config: null, prev: '' }, event), { hash: '' });
  }
  admin(): void {
    // Nothing kept.
  }
  complete(): void {
    // Nothing kept.
  }
  event(): void {
    // Nothing kept.
  }
  setConfigVersion(): void {
    // Nothing kept.
  }
  flush(): Promise<void> {
    this.turn ??= new Promise((resolve) =>
      setImmediate(() => {
        this.turn = undefined;
        resolve();
      }),
    );
    return this.turn;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const file = process.argv[2];
if (file === undefined) throw new Error('usage: gateway-audit-variants.js CONFIG [--audit]');
const audited = process.argv[3] === '--audit';
const config = loadConfigFile(file);
// The logger `serve` uses (buffered, asynchronous): only the audit log differs between the two gateways.
const destination = pino.destination({ sync: false, minLength: 8192 });
const log = pino({ level: config.log.level, base: { service: 'gatehouse' } }, destination);
setInterval(() => destination.flush(), 250).unref();
const gateway = await Gateway.create(config, { log, ...(audited ? {} : { audit: new DiscardingSink() }) });
const address = await gateway.start();
process.stdout.write(`${JSON.stringify({ msg: 'gatehouse listening', port: address.port })}\n`);
process.on('SIGTERM', () => void gateway.stop().then(() => process.exit(0)));
