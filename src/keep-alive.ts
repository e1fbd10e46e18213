// Outgoing HTTP(S) requests on connections kept open between calls (no TCP or TLS handshake per
// call; idle ones do not keep a process alive). Shared by the providers' streaming client and
// the API client.
import http from 'node:http';
import https from 'node:https';

const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };

export function keepAliveRequest(url: URL, options: http.RequestOptions, onResponse?: (res: http.IncomingMessage) => void): http.ClientRequest {
  const secure = url.protocol === 'https:';
  return (secure ? https : http).request(url, { ...options, agent: secure ? agents.https : agents.http }, onResponse);
}
