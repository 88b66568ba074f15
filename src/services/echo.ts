// The built-in `echo` service: answers with the principal and the canonical request as the gateway saw them.
// Useful to check a route's authentication and canonicalization without an upstream; it never reflects credentials.
import type { AuthenticatedRequest, Handler } from '../pipeline/stage.js';
import { sendJson, type HttpExchange } from '../server/exchange.js';

export class EchoService implements Handler {
  async handle(request: AuthenticatedRequest, exchange: HttpExchange): Promise<void> {
    // A body is never echoed; it is drained (bounded by the route limit at the edge) so the connection stays usable.
    if (request.hasBody) await drain(exchange, request.route.bodyLimitBytes);
    if (exchange.res.headersSent || exchange.res.destroyed) return;
    const { principal } = request;
    sendJson(exchange, 200, {
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
    });
  }
}

function drain(exchange: HttpExchange, limit: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const { req } = exchange;
    req.on('data', (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > limit) {
        exchange.res.destroy();
        resolve();
      }
    });
    req.once('end', resolve);
    req.once('error', () => resolve());
    req.once('close', () => resolve());
  });
}
