// Bench peer: nginx as a TLS reverse proxy with one worker, when `nginx` is on PATH (Debian: apt-get install nginx), on
// the mTLS route: client certificates verified against the same CA, keep-alive to the same upstream, an access log.
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { DevCertificatePaths } from '../src/tls/ca.js';
import type { Started } from './children.js';

/** Whether nginx can be run: `nginx -v` exits 0. */
export function nginxAvailable(): boolean {
  const probe = spawnSync('nginx', ['-v'], { stdio: 'ignore' });
  return probe.error === undefined && probe.status === 0;
}

/** A port free on 127.0.0.1 now (nginx takes no port 0 it could report back). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Starts nginx in the foreground with its own prefix under `dir`; resolves once it accepts connections. */
export async function startNginx(dir: string, paths: DevCertificatePaths, upstreamPort: number): Promise<Started> {
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1;
daemon off;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'nginx-error.log')} warn;
events { worker_connections 4096; }
http {
  client_body_temp_path ${join(dir, 'body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  access_log ${join(dir, 'nginx-access.log')} combined buffer=64k flush=1s;
  keepalive_requests 100000;
  keepalive_timeout 60s;
  upstream app { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${paths.serverCert};
    ssl_certificate_key ${paths.serverKey};
    ssl_client_certificate ${paths.caCert};
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    location /bench {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`,
  );
  const child = spawn('nginx', ['-p', dir, '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode} (see ${join(dir, 'nginx-error.log')})`);
    if (await accepts(port)) return { child, port };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  throw new Error('nginx did not accept connections within 10 s');
}
