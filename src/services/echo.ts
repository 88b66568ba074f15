// The built-in `echo` service: answers with the principal and the canonical request as the gateway saw them.
// Useful to check a route's authentication and canonicalization without an upstream; it never reflects credentials.
import { GatewayError } from '../errors/catalogue.js';
import type { AuthenticatedRequest, RequestBody, Service, ServiceResult } from '../pipeline/stage.js';

const TOO_LARGE: ServiceResult = Object.freeze({
  outcome: 'refused',
  error: new GatewayError('payload_too_large', { reason: 'streamed body over route limit' }),
  // Reading stopped at the limit: an HTTP/1.1 connection with the rest of the body in it cannot be trusted again.
  unreadBody: true,
});

const GONE: ServiceResult = Object.freeze({ outcome: 'gone', reason: 'client left before the body was complete' });

export class EchoService implements Service {
  readonly kind = 'service';

  async serve(request: AuthenticatedRequest, body: RequestBody): Promise<ServiceResult> {
    // A body is never echoed; it is drained so the connection stays usable. The edge refuses a Content-Length over the
    // route limit; a chunked or HTTP/2 body without one is counted here and refused with 413 once it crosses the limit (H1-15).
    if (request.hasBody) {
      const drained = await body.discard(request.route.bodyLimitBytes);
      if (drained === 'too_large') return TOO_LARGE;
      // Nobody is left to answer; the request is on record like every other (a failed stream is not a success).
      if (drained === 'gone') return GONE;
    }
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
