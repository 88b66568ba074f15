// `gatehouse reload` (issue #12 item 5): a route added to the file serves after the reload; an invalid file is refused by
// the command itself (78) and never sent; a change only a restart can make is refused by the gateway, which the command
// reports (1); without a running gateway on the data directory it says so (66). The gateway is a real `serve` process.
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initDevCertificates } from '../../src/tls/ca.js';
import { runCli, serveCli, type ServeProcess } from '../support/cli.js';
import { removeDir } from '../support/harness.js';

const work = mkdtempSync(join(tmpdir(), 'gatehouse-reload-'));
const certs = join(work, 'certs');
const configFile = join(work, 'gatehouse.yaml');
const dataDir = join(work, 'data');
let server: ServeProcess;
let agent: Agent;

function route(id: string, prefix: string): string {
  return `  - { id: ${id}, match: { path_prefix: ${prefix}, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n`;
}

function writeConfig(routes: string, host = '127.0.0.1'): void {
  writeFileSync(
    configFile,
    `server: { host: ${host}, port: 0 }\n` +
      `tls: { cert: ${certs}/server.pem, key: ${certs}/server-key.pem }\n` +
      `routes:\n${routes}` +
      `data_dir: ${dataDir}\n`,
  );
}

async function status(path: string): Promise<number> {
  const res = await request(`https://127.0.0.1:${server.port}${path}`, { dispatcher: agent });
  await res.body.dump();
  return res.statusCode;
}

beforeAll(async () => {
  await initDevCertificates(certs);
  agent = new Agent({ connect: { ca: readFileSync(join(certs, 'ca.pem')), servername: 'localhost' } });
  writeConfig(route('a', '/a'));
  server = await serveCli(['--config', configFile]);
});
afterAll(async () => {
  await server.stop();
  await agent.close();
  removeDir(work);
});

describe('gatehouse reload', () => {
  it('serve keeps its pid in the data directory', () => {
    expect(readFileSync(join(dataDir, 'gatehouse.pid'), 'utf8')).toBe(`${server.child.pid}\n`);
  });

  it('a route added to the file serves after the reload, which the command reports', async () => {
    expect(await status('/b/x')).toBe(404);
    writeConfig(route('a', '/a') + route('b', '/b'));
    const result = runCli(['reload', '--config', configFile]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/^reloaded .*gatehouse\.yaml: \{.*"config_sha256":"[0-9a-f]{64}"/);
    expect(await status('/b/x')).toBe(200);
  });

  it('an invalid file is refused by the command (78) and never sent: the gateway serves on unchanged', async () => {
    writeFileSync(configFile, `${readFileSync(configFile, 'utf8')}bogus_key: 1\n`);
    const result = runCli(['reload', '--config', configFile]);
    expect(result.status).toBe(78);
    expect(result.stderr).toMatch(/bogus_key/);
    expect(result.stderr).toMatch(/not reloaded: the configuration in force stays/);
    expect(await status('/b/x')).toBe(200);
  });

  it('a change only a restart can make is refused by the gateway, and the command says so (1)', async () => {
    writeConfig(route('a', '/a'), '127.0.0.2');
    const result = runCli(['reload', '--config', configFile]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^gatehouse: reload refused: .*server\.host.*; the configuration in force stays/);
    // Still the table in force: /b serves, the file's removal of it was not applied.
    expect(await status('/b/x')).toBe(200);
  });

  it('without a gateway on the data directory: 66, nothing signalled', () => {
    const result = runCli(['reload', '--config', configFile, '--data', join(work, 'elsewhere')]);
    expect(result.status).toBe(66);
    expect(result.stderr).toMatch(/no gateway is running on/);
  });

  it('the pid file goes with the process', async () => {
    await server.stop();
    expect(existsSync(join(dataDir, 'gatehouse.pid'))).toBe(false);
    // Restarted for afterAll's stop.
    writeConfig(route('a', '/a'));
    server = await serveCli(['--config', configFile]);
  });
});
