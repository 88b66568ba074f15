// The built-in `echo` service: answers with the principal and the canonical request as the gateway saw them.
// Useful to check a route's authentication and canonicalization without an upstream; it never reflects credentials.
import { GatewayError } from '../errors/catalogue.js';
import type { AuthenticatedRequest, Service, ServiceResult } from '../pipeline/stage.js';
import type { HttpExchange } from '../server/exchange.js';

const TOO_LARGE: ServiceResult = Object.freeze({
  outcome: 'refused',
  error: new GatewayError('payload_too_large', { reason: 'streamed body over route limit' }),
  // Reading stopped at the limit: an HTTP/1.1 connection with the rest of the body in it cannot be trusted again.
  unreadBody: true,
});

export class EchoService implements Service {
  readonly kind = 'service';

  async serve(request: AuthenticatedRequest, exchange: HttpExchange): Promise<ServiceResult> {
    // A body is never echoed; it is drained so the connection stays usable. The edge refuses a Content-Length over the
    // route limit; a chunked or HTTP/2 body without one is counted here and refused with 413 once it crosses the limit (H1-15).
    if (request.hasBody && !(await drain(exchange, request.route.bodyLimitBytes))) return TOO_LARGE;
    const { principal } = request;
    return {
      outcome: 'answered',
      answer: {
        status: 200,
        body: {
          request_id: request.id,
          route: request.route.id,
          principal: {
            subject: principal.subject,
            method: principal.method,
            scopes: [...principal.scopes],
            certificate_thumbprint: principal.certificateThumbprint ?? null,
          },
          request: {
            method: request.method,
            host: request.host,
            path: request.path,
            query: request.query,
            protocol: request.connection.protocol,
            client_ip: request.connection.clientAddress,
          },
        },
      },
    };
  }
}

/** Reads and discards the request body; resolves false (and stops reading) as soon as it crosses `limit`. */
function drain(exchange: HttpExchange, limit: number): Promise<boolean> {
  return new Promise((resolve) => {
    let seen = 0;
    const { req } = exchange;
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen > limit) {
        req.off('data', onData);
        req.pause();
        resolve(false);
      }
    };
    req.on('data', onData);
    req.once('end', () => resolve(true));
    req.once('error', () => resolve(true));
    req.once('close', () => resolve(true));
  });
}
