import { describe, expect, it } from 'vitest';
import { limitKey } from '../../src/server/connection-guard.js';

describe('per-IP limit keys (IPv6 prefixes)', () => {
  it('keys IPv4 addresses on the full address', () => {
    expect(limitKey('203.0.113.7', 64)).toBe('203.0.113.7');
  });

  it('keys every address of one IPv6 /64 alike, and different /64s apart', () => {
    const a = limitKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd', 64);
    expect(a).toBe('20010db800010002/64');
    expect(limitKey('2001:db8:1:2::1', 64)).toBe(a);
    expect(limitKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff', 64)).toBe(a);
    expect(limitKey('2001:db8:1:3::1', 64)).not.toBe(a);
  });

  it('handles ::, loopback, embedded IPv4 and prefixes that are not byte aligned', () => {
    expect(limitKey('::1', 128)).toBe('00000000000000000000000000000001/128');
    expect(limitKey('::', 64)).toBe('0000000000000000/64');
    expect(limitKey('64:ff9b::192.0.2.33', 128)).toBe('0064ff9b0000000000000000c0000221/128');
    expect(limitKey('2001:db8:ffff::', 36)).toBe('20010db8f0/36');
    expect(limitKey('2001:db8:0fff::', 36)).toBe('20010db800/36');
  });
});
