// Public types of @push-dev/client.

import type { WebSocketConstructor } from "./transport.js";

export type { WebSocketConstructor, WebSocketLike } from "./transport.js";

/** The connection's state. `connecting` also covers waiting to reconnect. */
export type ConnectionState = "connecting" | "connected" | "disconnected";

/** `auto`: WebSocket, then SSE when the WebSocket handshake fails. */
export type TransportKind = "websocket" | "sse" | "auto";

export interface PushClientOptions {
  /** A token (JWT) sent as the `token` query parameter. */
  token?: string;
  /**
   * Returns a fresh token. Called at the first connect when `token` is not
   * given, before a connect whose token is expired, and after the server
   * said `token_expired` or answered 401. Returning null/"" means "not
   * allowed": the client stops (state `disconnected`, `error` event).
   */
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  /** Default `auto`. */
  transport?: TransportKind;
  /** Static publish key for `publish` over HTTP (`Authorization: Bearer`). */
  publishKey?: string;
  /** Cap of the first reconnect delay (ms), doubled per failed attempt. Default 500. */
  minReconnectDelayMs?: number;
  /** Largest reconnect delay cap (ms). Default 20000. */
  maxReconnectDelayMs?: number;
  /** Give up on a handshake (WebSocket `welcome`, SSE `200`) after this long (ms). Default 10000. */
  connectTimeoutMs?: number;
  /**
   * The server's `sse_heartbeat` (ms, default 15000): an SSE stream silent
   * for twice this is dropped and reopened. (WebSocket uses the
   * `heartbeat_ms` of the server's `welcome`.)
   */
  sseHeartbeatMs?: number;
  /** How long a publish over the WebSocket waits for `published` (ms). Default 10000. */
  publishTimeoutMs?: number;
  /** Publishes over the WebSocket waiting for an answer at once. Default 1000. */
  maxPendingPublishes?: number;
  /** Largest SSE event accepted (characters). Default 4 MiB. */
  maxEventBytes?: number;
  /** WebSocket implementation (default: the global one, else the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** fetch implementation (default: the global one). */
  fetch?: typeof fetch;
}

export interface SubscribeOptions {
  /** Resume after this id (exclusive): the id of the last message the application has. */
  since?: string;
  /**
   * Acknowledged delivery (WebSocket only): each message is acked when its
   * handler returns, or when the promise it returns resolves.
   */
  ack?: boolean;
}

/** A message of a channel. */
export interface Message<T = unknown> {
  channel: string;
  id: string;
  data: T;
}

export interface SubscribedEvent {
  channel: string;
  /** false: messages after the resume position were lost (a `gap` event was emitted too). */
  recovered: boolean;
  /** The id the subscription starts from. */
  position: string;
  /** Whether this is a resubscription after a reconnect. */
  resubscribed: boolean;
}

export interface GapEvent {
  channel: string;
  /** `recovered_false` (WebSocket `subscribed`), `reset` (SSE `event: reset`). */
  reason: "recovered_false" | "reset";
  /** The id the client asked to resume after. */
  since: string | null;
  /** Set when the server's last `reconnect` said `broker_gap`. */
  brokerGap: boolean;
}

export interface ErrorEvent {
  code: string;
  message: string;
  channel?: string;
  /** Message id, for `ack_timeout` and `handler_failed`. */
  id?: string;
  cause?: unknown;
}

export interface ConnectedEvent {
  transport: "websocket" | "sse";
  /** WebSocket `welcome.connection_id`. */
  connectionId?: string;
}

export interface DisconnectedEvent {
  /** The server's `reconnect` reason (draining, max_lifetime, …), an error code, or what failed. */
  reason: string;
  /** WebSocket close code, when there was one. */
  code?: number;
  /** HTTP status of a refused handshake, when known. */
  status?: number;
  /** false: the client stopped (disconnect(), or an error it cannot fix by retrying). */
  willReconnect: boolean;
  /** Delay before the next attempt (ms). */
  delayMs?: number;
}

export interface ClientEvents {
  state: ConnectionState;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  error: ErrorEvent;
}

export interface SubscriptionEvents {
  message: Message;
  subscribed: SubscribedEvent;
  gap: GapEvent;
  error: ErrorEvent;
}

export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed";

export interface PublishResult {
  channel: string;
  id: string;
}

export interface HistoryOptions {
  since?: string;
  limit?: number;
}

export interface HistoryPage {
  messages: Message[];
  recovered: boolean;
  position: string | null;
}

export interface Presence {
  channel: string;
  connections: number;
  users: string[];
}

/** An error of the server (`{"error":{code,message}}`) or of the client. */
export class PushError extends Error {
  readonly code: string;
  readonly status: number | undefined;
  constructor(code: string, message: string, status?: number) {
    super(message);
    this.name = "PushError";
    this.code = code;
    this.status = status;
  }
}
