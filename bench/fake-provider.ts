// Benchmark's fake OpenAI-compatible provider (own process): waits TTFT ms, then streams TOKENS
// chunks, BURST of them per write every INTERVAL ms; each chunk carries its write time (the first
// also when the request arrived).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const [TTFT_MS, TOKENS, INTERVAL_MS, BURST] = process.argv.slice(2).map(Number) as [number, number, number, number];
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const server = http.createServer(async (req, res) => {
  const arrived = now();
  let body = '';
  for await (const c of req) body += c;
  const j = JSON.parse(body);
  const isTitle = typeof j.messages?.[0]?.content === 'string' && j.messages[0].content.startsWith('Write a title');
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const head = `data: {"id":"b","object":"chat.completion.chunk","created":0,"model":${JSON.stringify(j.model)},"choices":[{"index":0,"delta":{"content":"`;
  const tail = `"},"finish_reason":null}]}\n\n`;
  if (isTitle) res.write(head + 'Bench chat' + tail);
  else {
    await sleep(TTFT_MS);
    for (let i = 0; i < TOKENS; i += BURST) {
      if (i > 0) await sleep(INTERVAL_MS);
      if (res.destroyed) return;
      let out = '';
      // The first token also carries when the request arrived (the bench splits its overhead with it).
      for (let k = i; k < Math.min(TOKENS, i + BURST); k++) out += `${head}@${now().toFixed(3)} ${k === 0 ? `${arrived.toFixed(3)} ` : ''}${tail}`;
      res.write(out);
    }
  }
  res.write(`data: {"id":"b","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":${TOKENS},"total_tokens":${TOKENS + 1}}}\n\n`);
  res.end('data: [DONE]\n\n');
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1\n`);
});
