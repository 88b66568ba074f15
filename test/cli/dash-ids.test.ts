// The argv rewrite that lets a client id beginning with "-" be given as it is: which arguments it moves behind "--", and
// which it must leave alone (option names, option values, other commands, anything not shaped like an issued id).
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { adminActor } from '../../src/audit/admin-log.js';
import { registerAdminCommands } from '../../src/cli/admin.js';
import { protectDashIds } from '../../src/cli/arguments.js';

const program = new Command('gatehouse');
registerAdminCommands(program, {
  defaultConfig: 'gatehouse.yaml',
  masterKey: undefined,
  databaseUrl: undefined,
  actor: adminActor('test', 1000, undefined),
  exit: { failure: 1, usage: 64, noInput: 66, unavailable: 69, software: 70, config: 78 },
  fail: (message) => {
    throw new Error(message);
  },
  warn: () => undefined,
});

const DASH_ID = '-nQndXb2kQ3dY5wJmT8pAw';
/** A signing-key id (RFC 7638 thumbprint) that begins with "-": one kid in 64 does. */
const DASH_KID = '-Ws1dfhxPCbAyMFLnlc5QNUmqAj0VXOdKcGIjJVsSlg';
const argv = (...args: string[]): string[] => ['node', 'gatehouse', ...args];
const protect = (...args: string[]): string[] => protectDashIds(program, argv(...args));

describe('client ids beginning with "-" on the command line', () => {
  it('moves the id behind "--" for every command that takes one, keeping the options in order', () => {
    for (const command of ['show', 'disable', 'enable', 'rotate-secret', 'remove', 'update']) {
      expect(protect('clients', command, DASH_ID)).toEqual(argv('clients', command, '--', DASH_ID));
    }
    expect(protect('clients', 'show', '--json', DASH_ID, '--config', 'f.yaml')).toEqual(argv('clients', 'show', '--json', '--config', 'f.yaml', '--', DASH_ID));
    expect(protect('clients', 'rotate-secret', DASH_ID, '--keep-old-for', '1h')).toEqual(
      argv('clients', 'rotate-secret', '--keep-old-for', '1h', '--', DASH_ID),
    );
  });

  it('leaves option values, option names, other commands and other shapes alone', () => {
    const unchanged = [
      // The value of an option that takes one is that option's, whatever it looks like.
      ['clients', 'update', 'AAAAAAAAAAAAAAAAAAAAAA', '--name', DASH_ID],
      ['clients', 'show', '--config', DASH_ID, 'AAAAAAAAAAAAAAAAAAAAAA'],
      ['clients', 'show', '-c', DASH_ID, 'AAAAAAAAAAAAAAAAAAAAAA'],
      // Already separated.
      ['clients', 'show', '--', DASH_ID],
      // Not the shape of an issued id (22 characters, the last one of A Q g w): an option typo stays an error.
      ['clients', 'show', '-nQnd'],
      ['clients', 'show', '-nQndXb2kQ3dY5wJmT8pAx'],
      // Commands without an id operand.
      ['clients', 'list', DASH_ID],
      ['clients', 'add', DASH_ID, '--scope', 'read'],
      ['keys', 'revoke', DASH_ID],
      ['keys', 'list', DASH_KID],
    ];
    for (const args of unchanged) expect(protect(...args), args.join(' ')).toEqual(argv(...args));
  });
});

describe('signing-key ids beginning with "-" on the command line', () => {
  it('keys revoke takes one as it is (a regression: revoking such a key was a usage error, exit 64)', () => {
    expect(protect('keys', 'revoke', DASH_KID)).toEqual(argv('keys', 'revoke', '--', DASH_KID));
    expect(protect('keys', 'revoke', '--json', DASH_KID, '--alg', 'ES256')).toEqual(argv('keys', 'revoke', '--json', '--alg', 'ES256', '--', DASH_KID));
    // A value of --alg, an option typo, or not a kid's shape: left alone.
    expect(protect('keys', 'revoke', '-Ws1dfh')).toEqual(argv('keys', 'revoke', '-Ws1dfh'));
  });
});
