// bench:chat's floor: the least a server can do to relay a provider's stream to WebSocket
// clients, in its own process as the server is. It speaks just enough of the chat API for the
// bench's load (create a chat, send a message, stream) and nothing else: no database, no auth,
// no event log, no queue. Each provider read becomes one frame of one delta, the frame format
// Airlock sends. What it measures is the machine and the load, not Airlock: the bench prints our
// figures beside its own so a reader sees how far above that floor we are.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

const providerUrl = new URL(`${process.argv[2]!.replace(/\/+$/, '')}/chat/completions`);
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const streams = new Map<string, WebSocket>();
let chats = 0;

function relay(chatId: string, content: string): void {
  const ws = streams.get(chatId);
  const send = (events: object[]) => ws?.send(JSON.stringify(events));
  const body = JSON.stringify({ model: 'bench-model', stream: true, messages: [{ role: 'user', content }] });
  const req = http.request(providerUrl, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
    res.setEncoding('utf8');
    let buf = '';
    res.on('data', (chunk: string) => {
      buf += chunk;
      let text = '';
      let end: number;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const data = buf.slice(buf.indexOf('data: ') + 6, end);
        buf = buf.slice(end + 2);
        if (data === '[DONE]') continue;
        text += JSON.parse(data).choices?.[0]?.delta?.content ?? '';
      }
      if (text) send([{ chat_id: chatId, type: 'delta', text }]);
    });
    res.on('end', () => send([{ chat_id: chatId, type: 'status', status: 'waiting' }]));
  });
  req.on('error', (err) => send([{ chat_id: chatId, type: 'status', status: 'error', error: err.message }]));
  req.end(body);
}

const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c: string) => (body += c));
  req.on('end', () => {
    const reply = (status: number, json: object) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(json));
    };
    if (req.method === 'POST' && req.url === '/api/chats') return reply(201, { id: `bare-${++chats}` });
    const m = /^\/api\/chats\/([^/]+)\/messages$/.exec(req.url ?? '');
    if (req.method === 'POST' && m) {
      relay(m[1]!, String(JSON.parse(body).content));
      return reply(201, {});
    }
    reply(404, { error: { code: 'not_found', message: 'the bare relay serves only the bench' } });
  });
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on('upgrade', (req, socket, head) => {
  const m = /^\/api\/chats\/([^/?]+)\/stream/.exec(req.url ?? '');
  if (!m) return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => {
    streams.set(m[1]!, ws);
    ws.on('close', () => streams.delete(m[1]!));
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
