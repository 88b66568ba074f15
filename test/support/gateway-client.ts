// A TLS client for a running gateway (a `serveCli` process or a harness gateway): the token, revocation and JWKS endpoints
// and a bearer call, over undici with the test CA. One agent, closed by close().
import { Agent, request } from 'undici';

export interface ClientCredentials {
  readonly id: string;
  readonly secret: string;
}

export interface TokenAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
  readonly retryAfter: string | undefined;
}

export class GatewayClient {
  private readonly agent: Agent;

  constructor(ca: Buffer | string) {
    this.agent = new Agent({ connect: { ca, servername: 'localhost' } });
  }

  async token(port: number, client: ClientCredentials, form = 'grant_type=client_credentials'): Promise<TokenAnswer> {
    const response = await this.post(port, '/oauth2/token', client, form);
    const retryAfter = response.headers['retry-after'];
    return {
      status: response.statusCode,
      body: (await response.body.json()) as Record<string, unknown>,
      retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
    };
  }

  /** An access token that the test needs and expects to get. */
  async accessToken(port: number, client: ClientCredentials): Promise<string> {
    const answer = await this.token(port, client);
    if (answer.status !== 200 || typeof answer.body['access_token'] !== 'string') throw new Error(`token: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body['access_token'];
  }

  /** RFC 7009 revocation; answers the status. */
  async revoke(port: number, client: ClientCredentials, token: string): Promise<number> {
    const response = await this.post(port, '/oauth2/revoke', client, `token=${encodeURIComponent(token)}`);
    await response.body.dump();
    return response.statusCode;
  }

  /** The kids the gateway publishes. */
  async jwksKids(port: number): Promise<string[]> {
    const response = await request(`https://127.0.0.1:${port}/.well-known/jwks.json`, { dispatcher: this.agent });
    const body = (await response.body.json()) as { keys: { kid: string }[] };
    return body.keys.map((key) => key.kid);
  }

  /** GET path without credentials: the status and the response headers. */
  async get(port: number, path: string): Promise<{ readonly status: number; readonly headers: Readonly<Record<string, string | string[] | undefined>> }> {
    const response = await request(`https://127.0.0.1:${port}${path}`, { dispatcher: this.agent });
    await response.body.dump();
    return { status: response.statusCode, headers: response.headers };
  }

  /** GET path with the bearer token; answers the status. */
  async call(port: number, accessToken: string, path = '/api/x'): Promise<number> {
    const response = await request(`https://127.0.0.1:${port}${path}`, { dispatcher: this.agent, headers: { authorization: `Bearer ${accessToken}` } });
    await response.body.dump();
    return response.statusCode;
  }

  close(): Promise<void> {
    return this.agent.close();
  }

  private post(port: number, path: string, client: ClientCredentials, body: string): ReturnType<typeof request> {
    return request(`https://127.0.0.1:${port}${path}`, {
      method: 'POST',
      dispatcher: this.agent,
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`,
      },
      body,
    });
  }
}
