// Opens many TLS connections to a target and keeps them idle, from a process of its own: how much memory idle clients cost
// a server, and how fast it completes full handshakes (no session resumption: each connection is new).
// Usage: node idle.js <port> <count>. Prints one JSON line once every connection is up (or failed), then holds them until
// SIGTERM.
import { connect, type TLSSocket } from 'node:tls';

const [portText, countText] = process.argv.slice(2);
const port = Number(portText);
const count = Number(countText);
if (!Number.isInteger(port) || !Number.isInteger(count) || count <= 0) {
  process.stderr.write('usage: idle <port> <count>\n');
  process.exit(64);
}
/** Handshakes in flight at once: enough to keep the server busy, few enough not to trip its own connect timeouts. */
const CONCURRENCY = 64;

const sockets: TLSSocket[] = [];
let failed = 0;
let closedEarly = 0;

function open(): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    socket.once('secureConnect', () => {
      sockets.push(socket);
      socket.once('close', () => closedEarly++);
      resolve();
    });
    socket.once('error', () => {
      failed++;
      resolve();
    });
  });
}

const started = performance.now();
let next = 0;
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (next < count) {
      next++;
      await open();
    }
  }),
);
const ms = performance.now() - started;
process.stdout.write(`${JSON.stringify({ opened: sockets.length, failed, ms, handshakesPerSecond: (sockets.length * 1000) / ms })}\n`);
process.on('SIGTERM', () => {
  for (const socket of sockets) socket.destroy();
  process.stdout.write(`${JSON.stringify({ closedEarly })}\n`);
  process.exit(0);
});
