// Prometheus metrics (prom-client), served at /metrics. One registry per process: servers started
// in one process (tests) add to the same series.
import client from 'prom-client';

const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

const ms = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

export const metrics = {
  registry,
  acquisitionMs: new client.Histogram({
    name: 'airlock_chat_acquisition_ms',
    help: 'message committed (chat pending) → a worker owns the chat',
    buckets: ms,
    registers: [registry],
  }),
  firstTokenMs: new client.Histogram({
    name: 'airlock_chat_first_token_ms',
    help: 'turn start → first streamed token from the provider',
    buckets: ms,
    registers: [registry],
  }),
  tokens: new client.Counter({ name: 'airlock_chat_tokens_streamed_total', help: 'text and reasoning deltas streamed from the provider (deltas read together leave as one stream event)', registers: [registry] }),
  turns: new client.Counter({ name: 'airlock_chat_turns_total', help: 'turns ended, by final status', labelNames: ['status'], registers: [registry] }),
  toolsInterrupted: new client.Counter({
    name: 'airlock_chat_tools_interrupted_total',
    help: 'tool calls not safe to re-run that a lost worker left without a result (reported to the model, not re-run)',
    labelNames: ['tool'],
    registers: [registry],
  }),
  activeRuns: new client.Gauge({ name: 'airlock_chat_active_runs', help: 'chats this replica is running', registers: [registry] }),
  activeStreams: new client.Gauge({ name: 'airlock_chat_active_streams', help: 'open chat stream WebSockets', registers: [registry] }),
  activeSessions: new client.Gauge({ name: 'airlock_launch_active_sessions', help: 'launch sessions being signalled or relayed by this replica', registers: [registry] }),
  launchPhaseMs: new client.Histogram({
    name: 'airlock_launch_phase_ms',
    help: 'launch phases seen by the control plane (offer → answer, session start → path up)',
    labelNames: ['phase'],
    buckets: ms,
    registers: [registry],
  }),
  busLagMs: new client.Histogram({
    name: 'airlock_bus_lag_ms',
    help: 'publish on another replica → delivery here',
    labelNames: ['bus'],
    buckets: [0.5, 1, 2, 5, 10, 20, 50, 100, 500, 1000],
    registers: [registry],
  }),
  gatewayTakeoversRefused: new client.Counter({
    name: 'airlock_gateway_takeovers_refused_total',
    help: 'connections refused because another connection with the same gateway token was live',
    registers: [registry],
  }),
  busRejected: new client.Counter({
    name: 'airlock_bus_rejected_total',
    help: 'bus messages dropped: not signed with the replicas\' key (bad_mac), sent again (replay) or too old (stale)',
    labelNames: ['reason'],
    registers: [registry],
  }),
  busGaps: new client.Counter({ name: 'airlock_bus_gaps_total', help: 'bus reconnects after which messages may have been missed', registers: [registry] }),
  httpRequests: new client.Counter({ name: 'airlock_http_requests_total', help: 'HTTP requests by status class', labelNames: ['code'], registers: [registry] }),
};
