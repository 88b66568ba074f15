// Request ids: random, unguessable, made by the gateway only (a client-sent X-Request-Id is never trusted or reused).
import { randomUUID } from 'node:crypto';

export function newRequestId(): string {
  return randomUUID();
}
