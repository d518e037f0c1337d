// @push-dev/client: the client library of Push (docs/client-js.md).
//
// Layout:
// - client.ts: PushClient, the connection's state machine (connect,
//   reconnect, token refresh, liveness) and the WebSocket / SSE protocol.
// - subscription.ts: one channel's resume position, dedup and acks.
// - transport.ts: WebSocket (global or `ws`) and SSE over fetch streaming.
// - sse.ts: the text/event-stream parser.
// - ids.ts, backoff.ts, token.ts, emitter.ts: small pure helpers.

export { PushClient } from "./client.js";
export { Subscription } from "./subscription.js";
export { backoffDelay, serverDelay } from "./backoff.js";
export { compareIds, isMessageId, parseCursor, formatCursor } from "./ids.js";
export { SseParser } from "./sse.js";
export type { SseEvent } from "./sse.js";
export * from "./types.js";
