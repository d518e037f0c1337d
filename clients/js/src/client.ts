// PushClient: one connection (WebSocket or SSE) that carries every
// subscription of the client, and keeps them going across reconnects.
//
// The life of the connection is a small state machine:
//
//   disconnected --connect()--> connecting --welcome / SSE 200--> connected
//        ^                        ^   |                              |
//        |                        |   +-- failure: wait (backoff or  |
//        |                        +------ the server's retry_ms) <---+
//        +-- disconnect(), or an error retrying cannot fix (401 with a
//            fresh token, 4xx refusals): `disconnected`, no more attempts.
//
// Every attempt has a number (`gen`); callbacks of an older attempt are
// ignored, so a late close or a slow getToken can never act on a newer
// connection. Nothing is buffered without a bound: subscriptions are the
// application's own, pending WebSocket publishes are capped, SSE events are
// capped in size, and messages go to the handlers as they arrive.

import { backoffDelay, serverDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { formatCursor, isMessageId, parseCursor } from "./ids.js";
import { Subscription, type SubscriptionHost } from "./subscription.js";
import { grants, isExpired, readClaims, type TokenClaims } from "./token.js";
import {
  openSse,
  openWebSocket,
  readError,
  resolveWebSocket,
  type CloseInfo,
  type Transport,
} from "./transport.js";
import {
  PushError,
  type ClientEvents,
  type ConnectionState,
  type HistoryOptions,
  type HistoryPage,
  type Message,
  type Presence,
  type PublishResult,
  type PushClientOptions,
  type SubscribeOptions,
  type TransportKind,
} from "./types.js";

const CHANNEL = /^[A-Za-z0-9_.:@-]{1,128}$/;

/** HTTP statuses of a refused connection that retrying will not fix. */
const FATAL_CODES = new Set(["invalid_channel", "too_many_channels", "forbidden", "forbidden_origin", "invalid_query"]);
const AUTH_CODES = new Set(["unauthorized", "invalid_token", "token_expired"]);
/** getToken's tokens refused in a row before the client gives up. */
const MAX_AUTH_REFUSALS = 3;

interface Pending {
  kind: "subscribe" | "unsubscribe" | "publish";
  settled?: boolean;
  resolve?: (r: PublishResult) => void;
  reject?: (e: PushError) => void;
  timer?: ReturnType<typeof setTimeout>;
}

/** The connection of one attempt. */
interface Conn {
  gen: number;
  kind: "websocket" | "sse";
  transport: Transport | null;
  /** WebSocket: `welcome` arrived. SSE: 200 arrived. */
  ready: boolean;
  /** SSE: channels of the stream, in `channels=` order. */
  channels: string[];
  /** SSE: `subscribed` emitted for this stream. */
  sseStarted: boolean;
  /** Heartbeat of the liveness check (ms). */
  heartbeatMs: number;
  lastRx: number;
  pingSent: boolean;
  /** The server's `reconnect` frame / event, when it sent one. */
  reconnect?: { reason: string; retryMs: number | undefined };
  /** Requests waiting for their answer, per channel, in sending order (WebSocket). */
  pending: Map<string, Pending[]>;
  pendingPublishes: number;
}

function num(v: unknown, fallback: number): number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : fallback;
}

export class PushClient extends Emitter<ClientEvents> {
  private readonly base: URL;
  private readonly opts: Required<
    Pick<
      PushClientOptions,
      | "minReconnectDelayMs"
      | "maxReconnectDelayMs"
      | "connectTimeoutMs"
      | "sseHeartbeatMs"
      | "publishTimeoutMs"
      | "maxPendingPublishes"
      | "maxEventBytes"
    >
  >;
  private readonly getToken: PushClientOptions["getToken"];
  private readonly publishKey: string | undefined;
  private readonly transportKind: TransportKind;
  private readonly fetchImpl: typeof fetch;
  private readonly wsCtor: PushClientOptions["WebSocket"];

  private current: ConnectionState = "disconnected";
  private readonly subs = new Map<string, Subscription>();
  private conn: Conn | null = null;
  private gen = 0;
  /** Failed attempts since the last successful connection. */
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private livenessTimer: ReturnType<typeof setInterval> | undefined;
  private sseReopen = false;

  private token: string | undefined;
  private claims: TokenClaims | null = null;
  /** The token must be replaced before the next attempt. */
  private tokenStale = false;
  /** The token was fetched for the current attempt. */
  private tokenFresh = false;
  /** Fresh tokens refused in a row (401): after MAX_AUTH_REFUSALS the client stops. */
  private authRefusals = 0;
  /** `auto`: the next attempt uses SSE (the WebSocket handshake failed). */
  private autoSse = false;
  /** `auto`: SSE worked after the WebSocket failed: keep SSE until connect(). */
  private autoStickSse = false;
  private lastReconnectReason: string | undefined;

  constructor(baseUrl: string, options: PushClientOptions = {}) {
    super((e) => this.reportListenerError(e));
    this.base = new URL(baseUrl);
    if (this.base.protocol !== "http:" && this.base.protocol !== "https:") {
      throw new TypeError(`the base URL must be http(s)://, got ${JSON.stringify(baseUrl)}`);
    }
    this.opts = {
      minReconnectDelayMs: num(options.minReconnectDelayMs, 500),
      maxReconnectDelayMs: num(options.maxReconnectDelayMs, 20_000),
      connectTimeoutMs: num(options.connectTimeoutMs, 10_000),
      sseHeartbeatMs: num(options.sseHeartbeatMs, 15_000),
      publishTimeoutMs: num(options.publishTimeoutMs, 10_000),
      maxPendingPublishes: num(options.maxPendingPublishes, 1000),
      maxEventBytes: num(options.maxEventBytes, 4 * 1024 * 1024),
    };
    this.getToken = options.getToken;
    this.publishKey = options.publishKey;
    this.transportKind = options.transport ?? "auto";
    if (!["websocket", "sse", "auto"].includes(this.transportKind)) {
      throw new TypeError(`transport must be "websocket", "sse" or "auto"`);
    }
    const f = options.fetch ?? (globalThis as { fetch?: typeof fetch }).fetch;
    if (typeof f !== "function") throw new TypeError("no fetch in this runtime: pass options.fetch");
    this.fetchImpl = f.bind(globalThis);
    this.wsCtor = options.WebSocket;
    if (options.token) this.setToken(options.token);
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.current;
  }

  /** The transport of the current connection, or null. */
  get transport(): "websocket" | "sse" | null {
    return this.conn?.kind ?? null;
  }

  /** The subscription of `channel`, if any. */
  getSubscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  /** Every current subscription. */
  subscriptions(): Subscription[] {
    return [...this.subs.values()];
  }

  // ---- public API ------------------------------------------------------

  /** Opens the connection (no-op unless `disconnected`). */
  connect(): void {
    if (this.current !== "disconnected") return;
    this.attempt = 0;
    this.authRefusals = 0;
    this.autoSse = false;
    this.autoStickSse = false;
    this.setState("connecting");
    this.runAttempt();
  }

  /** Closes the connection and stops reconnecting. Subscriptions are kept for the next connect(). */
  disconnect(): void {
    if (this.current === "disconnected") return;
    this.stop({ reason: "client", willReconnect: false });
  }

  /**
   * Subscribes to `channel` (now when connected, else on connect). Throws
   * if the channel name is invalid or already subscribed.
   */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    if (!CHANNEL.test(channel)) throw new PushError("invalid_channel", `invalid channel name ${JSON.stringify(channel)}`);
    if (this.subs.has(channel)) throw new PushError("already_subscribed", `already subscribed to ${channel}`);
    if (options.since !== undefined && !isMessageId(options.since)) {
      throw new PushError("invalid_since", `since must be a message id <ms>-<seq>, got ${JSON.stringify(options.since)}`);
    }
    const sub = new Subscription(this.host, channel, options);
    this.subs.set(channel, sub);
    const c = this.conn;
    if (c?.ready) {
      if (c.kind === "websocket") this.sendSubscribe(c, sub);
      else this.scheduleSseReopen();
    }
    return sub;
  }

  /** Unsubscribes `channel` (same as `getSubscription(channel).unsubscribe()`). */
  unsubscribe(channel: string): void {
    this.subs.get(channel)?.unsubscribe();
  }

  /**
   * Publishes `data` (any JSON value) to `channel`. Over the WebSocket when
   * connected by WebSocket with a token whose `publish` claim grants the
   * channel; otherwise over HTTP with `publishKey` (or the token) as bearer.
   */
  async publish(channel: string, data: unknown): Promise<PublishResult> {
    if (!CHANNEL.test(channel)) throw new PushError("invalid_channel", `invalid channel name ${JSON.stringify(channel)}`);
    const body = JSON.stringify(data);
    if (body === undefined) throw new PushError("invalid_json", "data must be a JSON value");
    const c = this.conn;
    if (c?.ready && c.kind === "websocket" && !this.publishKey && grants(this.claims?.publish, channel)) {
      return this.publishWs(c, channel, data);
    }
    const headers: Record<string, string> = { "content-type": "application/json" };
    const bearer = this.publishKey ?? this.token;
    if (bearer) headers.authorization = `Bearer ${bearer}`;
    const res = await this.http(`api/v1/channels/${encodeURIComponent(channel)}/messages`, {
      method: "POST",
      headers,
      body,
    });
    const v = (await this.json(res)) as { channel?: unknown; id?: unknown };
    if (typeof v.id !== "string") throw new PushError("invalid_response", "publish answer without id", res.status);
    return { channel, id: v.id };
  }

  /** Reads the channel's retained history, oldest first (`since` exclusive). */
  async history(channel: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    const q = new URLSearchParams();
    if (options.since !== undefined) q.set("since", options.since);
    if (options.limit !== undefined) q.set("limit", String(options.limit));
    const res = await this.read(`api/v1/channels/${encodeURIComponent(channel)}/messages`, q);
    const v = (await this.json(res)) as { messages?: unknown; recovered?: unknown; position?: unknown };
    const messages: Message[] = Array.isArray(v.messages)
      ? v.messages.filter(
          (m): m is Message => typeof m === "object" && m !== null && typeof (m as Message).id === "string",
        )
      : [];
    return {
      messages,
      recovered: v.recovered !== false,
      position: typeof v.position === "string" ? v.position : null,
    };
  }

  /** Who is connected to the channel. */
  async presence(channel: string): Promise<Presence> {
    const res = await this.read(`api/v1/channels/${encodeURIComponent(channel)}/presence`, new URLSearchParams());
    const v = (await this.json(res)) as { connections?: unknown; users?: unknown };
    return {
      channel,
      connections: typeof v.connections === "number" ? v.connections : 0,
      users: Array.isArray(v.users) ? v.users.filter((u): u is string => typeof u === "string") : [],
    };
  }

  // ---- HTTP --------------------------------------------------------------

  private url(path: string): URL {
    const u = new URL(this.base.href);
    u.pathname = `${u.pathname.replace(/\/+$/, "")}/${path}`;
    u.search = "";
    u.hash = "";
    return u;
  }

  /** GET with the publish key as bearer, else the token as query parameter (no CORS preflight). */
  private async read(path: string, q: URLSearchParams): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.publishKey) headers.authorization = `Bearer ${this.publishKey}`;
    else if (this.token) q.set("token", this.token);
    const u = this.url(path);
    u.search = q.toString();
    return this.http(u, { headers });
  }

  private async json(res: Response): Promise<Record<string, unknown>> {
    try {
      const v: unknown = await res.json();
      if (typeof v === "object" && v !== null) return v as Record<string, unknown>;
    } catch {
      // below
    }
    throw new PushError("invalid_response", "the server's answer is not a JSON object", res.status);
  }

  private async http(target: string | URL, init: RequestInit): Promise<Response> {
    const u = typeof target === "string" ? this.url(target) : target;
    let res: Response;
    try {
      res = await this.fetchImpl(u.href, init);
    } catch (e) {
      throw new PushError("network_error", `request failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!res.ok) {
      const err = await readError(res);
      throw new PushError(err.code ?? `http_${res.status}`, err.message ?? `HTTP ${res.status}`, res.status);
    }
    return res;
  }

  // ---- token -------------------------------------------------------------

  /**
   * Replaces the token (used from the next connection on; a stopped client
   * then needs connect()).
   */
  setToken(token: string): void {
    this.token = token;
    this.claims = readClaims(token);
    this.tokenStale = false;
  }

  /** Makes sure the token is usable for an attempt; false when the client stopped. */
  private async ensureToken(gen: number): Promise<boolean> {
    this.tokenFresh = false;
    const needs =
      this.getToken !== undefined &&
      (this.token === undefined || this.tokenStale || isExpired(this.claims, Date.now()));
    if (!needs) return true;
    let t: string | null | undefined;
    try {
      t = await this.getToken!();
    } catch (e) {
      if (gen !== this.gen) return false;
      this.emit("error", { code: "get_token_failed", message: `getToken failed: ${e instanceof Error ? e.message : String(e)}`, cause: e });
      this.retryLater({ reason: "get_token_failed", opened: false });
      return false;
    }
    if (gen !== this.gen) return false;
    if (!t) {
      this.emit("error", { code: "unauthorized", message: "getToken returned no token" });
      this.stop({ reason: "unauthorized", willReconnect: false });
      return false;
    }
    this.setToken(t);
    this.tokenStale = false;
    this.tokenFresh = true;
    return true;
  }

  // ---- attempts ------------------------------------------------------------

  /** Starts an attempt; an unexpected failure becomes an error and a retry, never an unhandled rejection. */
  private runAttempt(): void {
    this.startAttempt().catch((e: unknown) => {
      this.emit("error", { code: "internal", message: e instanceof Error ? e.message : String(e), cause: e });
      if (this.current !== "disconnected") this.retryLater({ reason: "internal", opened: false });
    });
  }

  private async startAttempt(): Promise<void> {
    const gen = ++this.gen;
    this.clearTimers();
    if (!(await this.ensureToken(gen)) || gen !== this.gen) return;
    const sse = this.transportKind === "sse" || (this.transportKind === "auto" && (this.autoSse || this.autoStickSse));
    if (sse) await this.openSseConn(gen);
    else this.openWsConn(gen);
  }

  private newConn(gen: number, kind: "websocket" | "sse", heartbeatMs: number): Conn {
    return {
      gen,
      kind,
      transport: null,
      ready: false,
      channels: [],
      sseStarted: false,
      heartbeatMs,
      lastRx: Date.now(),
      pingSent: false,
      pending: new Map(),
      pendingPublishes: 0,
    };
  }

  private armConnectTimeout(c: Conn): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (this.conn !== c || c.ready) return;
      c.transport?.close(4000, "connect timeout");
      this.onClose(c, { reason: "connect_timeout", opened: false });
    }, this.opts.connectTimeoutMs);
  }

  private openWsConn(gen: number): void {
    const u = this.url("ws");
    u.protocol = this.base.protocol === "https:" ? "wss:" : "ws:";
    if (this.token) u.searchParams.set("token", this.token);
    const c = this.newConn(gen, "websocket", 25_000);
    this.conn = c;
    this.armConnectTimeout(c);
    c.transport = openWebSocket(u.href, resolveWebSocket(this.wsCtor), {
      onOpen: () => {},
      onActivity: () => {
        c.lastRx = Date.now();
        c.pingSent = false;
      },
      onFrame: (f) => {
        if (this.conn === c) this.onWsFrame(c, f);
      },
      onClose: (info) => this.onClose(c, info),
    });
  }

  private async openSseConn(gen: number): Promise<void> {
    const c = this.newConn(gen, "sse", this.opts.sseHeartbeatMs);
    this.conn = c;
    const subs = [...this.subs.values()];
    c.channels = subs.map((s) => s.channel);
    if (subs.length === 0) {
      // Nothing to stream: "connected", and the stream opens with the first subscription.
      c.ready = true;
      this.onReady(c);
      return;
    }
    this.armConnectTimeout(c);
    // The cursor needs a position for every channel of the stream: channels
    // subscribed without one start from their current position.
    if (subs.some((s) => s.lastId !== null) && subs.some((s) => s.lastId === null)) {
      for (const s of subs) {
        if (s.lastId !== null) continue;
        try {
          const page = await this.history(s.channel, { limit: 0 });
          if (gen !== this.gen) return;
          if (page.position) s._adopt(page.position);
        } catch (e) {
          if (gen !== this.gen) return;
          const info: CloseInfo = { reason: e instanceof Error ? e.message : String(e), opened: false };
          if (e instanceof PushError) {
            info.errorCode = e.code;
            if (e.status !== undefined) info.status = e.status;
          }
          this.onClose(c, info);
          return;
        }
      }
      if (gen !== this.gen) return;
    }
    const u = this.url("sse");
    u.searchParams.set("channels", c.channels.join(","));
    if (this.token) u.searchParams.set("token", this.token);
    const positions = subs.map((s) => s.lastId);
    if (positions.every((p): p is string => p !== null)) u.searchParams.set("lastEventId", formatCursor(positions));
    for (const s of subs) s.pendingReset = false;
    c.transport = openSse(u.href, this.fetchImpl, this.opts.maxEventBytes, {
      onOpen: () => {
        if (this.conn !== c) return;
        c.ready = true;
        if (this.transportKind === "auto" && this.autoSse) this.autoStickSse = true;
        this.onReady(c);
      },
      onActivity: () => {
        c.lastRx = Date.now();
      },
      onFrame: (f) => {
        if (this.conn === c) this.onSseEvent(c, f);
      },
      onClose: (info) => this.onClose(c, info),
    });
  }

  /** The connection works: `connected`, timers, subscriptions. */
  private onReady(c: Conn, connectionId?: string): void {
    clearTimeout(this.connectTimer);
    this.attempt = 0;
    this.tokenFresh = false;
    this.authRefusals = 0;
    this.startLiveness(c);
    const e: ClientEvents["connected"] = { transport: c.kind };
    if (connectionId !== undefined) e.connectionId = connectionId;
    if (c.kind === "websocket") {
      for (const sub of this.subs.values()) this.sendSubscribe(c, sub);
    } else {
      this.scheduleSseReopen(); // no-op unless subscriptions changed while the stream opened
    }
    this.setState("connected");
    this.emit("connected", e);
  }

  // ---- WebSocket frames -----------------------------------------------------

  private onWsFrame(c: Conn, f: Record<string, unknown>): void {
    const channel = typeof f.channel === "string" ? f.channel : undefined;
    switch (f.type) {
      case "welcome": {
        if (c.ready) return;
        c.ready = true;
        c.heartbeatMs = num(f.heartbeat_ms, 25_000) || 25_000;
        this.onReady(c, typeof f.connection_id === "string" ? f.connection_id : undefined);
        return;
      }
      case "subscribed": {
        if (!channel) return;
        this.shiftPending(c, channel);
        const sub = this.subs.get(channel);
        const position = typeof f.position === "string" ? f.position : sub?.lastId ?? "0-0";
        sub?._subscribed(f.recovered !== false, position, "recovered_false", this.lastReconnectReason === "broker_gap");
        return;
      }
      case "unsubscribed":
        if (channel) this.shiftPending(c, channel);
        return;
      case "message": {
        if (!channel || typeof f.id !== "string") return;
        this.subs.get(channel)?._message(f.id, f.data, c.gen, true);
        return;
      }
      case "published": {
        if (!channel) return;
        const p = this.shiftPending(c, channel);
        if (p?.kind === "publish" && !p.settled && typeof f.id === "string") {
          this.settle(c, p);
          p.resolve?.({ channel, id: f.id });
        }
        return;
      }
      case "error": {
        const e: ClientEvents["error"] = {
          code: typeof f.code === "string" ? f.code : "error",
          message: typeof f.message === "string" ? f.message : "",
        };
        if (channel) e.channel = channel;
        if (typeof f.id === "string") e.id = f.id;
        if (channel && e.id === undefined) {
          // The answer to the oldest request on this channel.
          const p = this.shiftPending(c, channel);
          if (p?.kind === "publish") {
            if (!p.settled) {
              this.settle(c, p);
              p.reject?.(new PushError(e.code, e.message));
            }
            return;
          }
          if (p?.kind === "unsubscribe") return;
        }
        const sub = channel ? this.subs.get(channel) : undefined;
        if (sub) sub._error(e);
        else this.emit("error", e);
        return;
      }
      case "reconnect": {
        const reason = typeof f.reason === "string" ? f.reason : "reconnect";
        c.reconnect = { reason, retryMs: typeof f.retry_ms === "number" ? f.retry_ms : undefined };
        return; // the server closes the socket next
      }
      default:
        return; // pong, and frames of later protocol versions
    }
  }

  private pushPending(c: Conn, channel: string, p: Pending): void {
    let q = c.pending.get(channel);
    if (!q) c.pending.set(channel, (q = []));
    q.push(p);
  }

  private shiftPending(c: Conn, channel: string): Pending | undefined {
    const q = c.pending.get(channel);
    const p = q?.shift();
    if (q && q.length === 0) c.pending.delete(channel);
    return p;
  }

  private settle(c: Conn, p: Pending): void {
    p.settled = true;
    clearTimeout(p.timer);
    if (p.kind === "publish") c.pendingPublishes--;
  }

  private sendSubscribe(c: Conn, sub: Subscription): void {
    const frame: Record<string, unknown> = { type: "subscribe", channel: sub.channel };
    if (sub.lastId !== null) frame.since = sub.lastId;
    if (sub.ack) frame.ack = true;
    if (c.transport?.send(frame)) this.pushPending(c, sub.channel, { kind: "subscribe" });
  }

  private publishWs(c: Conn, channel: string, data: unknown): Promise<PublishResult> {
    if (c.pendingPublishes >= this.opts.maxPendingPublishes) {
      return Promise.reject(new PushError("too_many_pending", `${c.pendingPublishes} publishes already wait for an answer`));
    }
    return new Promise((resolve, reject) => {
      const p: Pending = { kind: "publish", resolve, reject };
      if (!c.transport?.send({ type: "publish", channel, data })) {
        reject(new PushError("disconnected", "not connected"));
        return;
      }
      c.pendingPublishes++;
      this.pushPending(c, channel, p);
      p.timer = setTimeout(() => {
        if (p.settled) return;
        this.settle(c, p); // stays queued: later answers still line up
        reject(new PushError("timeout", `no answer to the publish within ${this.opts.publishTimeoutMs} ms (it may still happen)`));
      }, this.opts.publishTimeoutMs);
    });
  }

  private readonly host: SubscriptionHost = {
    sendAck: (channel, id, gen) => {
      const c = this.conn;
      if (c && c.gen === gen && c.kind === "websocket") c.transport?.send({ type: "ack", channel, id });
    },
    removeSubscription: (sub) => {
      if (this.subs.get(sub.channel) !== sub) return;
      this.subs.delete(sub.channel);
      const c = this.conn;
      if (!c?.ready) return;
      if (c.kind === "websocket") {
        if (c.transport?.send({ type: "unsubscribe", channel: sub.channel })) {
          this.pushPending(c, sub.channel, { kind: "unsubscribe" });
        }
      } else if (c.channels.includes(sub.channel)) {
        this.scheduleSseReopen();
      }
    },
    reportListenerError: (e) => this.reportListenerError(e),
  };

  private reportListenerError(e: unknown): void {
    // A listener's own bug: reported, never allowed to break the client.
    try {
      this.emit("error", { code: "listener_failed", message: e instanceof Error ? e.message : String(e), cause: e });
    } catch {
      // nothing more to do
    }
  }

  // ---- SSE events -------------------------------------------------------------

  private onSseEvent(c: Conn, f: Record<string, unknown>): void {
    const event = f.event;
    const data = typeof f.data === "string" ? f.data : "";
    const id = typeof f.id === "string" ? f.id : undefined;
    if (event === "reset") {
      const ch = this.parseJson(data)?.channel;
      const sub = typeof ch === "string" ? this.subs.get(ch) : undefined;
      if (sub) sub.pendingReset = true;
      return;
    }
    if (event === "reconnect") {
      const v = this.parseJson(data);
      c.reconnect = {
        reason: typeof v?.reason === "string" ? v.reason : "reconnect",
        retryMs: typeof v?.retry_ms === "number" ? v.retry_ms : undefined,
      };
      return;
    }
    if (event !== "message") return;
    const envelope = data === "" ? null : this.parseJson(data);
    const msgChannel = typeof envelope?.channel === "string" ? envelope.channel : undefined;
    if (id !== undefined) {
      const positions = parseCursor(id, c.channels.length);
      if (positions) this.onSseCursor(c, positions, msgChannel);
    }
    if (envelope && msgChannel && typeof envelope.id === "string") {
      this.subs.get(msgChannel)?._message(envelope.id, envelope.data, c.gen, false);
    }
  }

  /** The first id of a stream confirms every channel (`subscribed`, `gap`). */
  private onSseCursor(c: Conn, positions: string[], msgChannel: string | undefined): void {
    const brokerGap = this.lastReconnectReason === "broker_gap";
    c.channels.forEach((ch, i) => {
      const sub = this.subs.get(ch);
      const pos = positions[i];
      if (!sub || pos === undefined) return;
      if (!c.sseStarted) {
        const recovered = !sub.pendingReset;
        sub.pendingReset = false;
        // The channel of this message event: its own position is the
        // message's id, which must still reach the handler.
        sub._subscribed(recovered, ch === msgChannel ? (sub.lastId ?? "0-0") : pos, "reset", brokerGap);
        if (ch === msgChannel && !recovered) return;
      }
      if (ch !== msgChannel) sub._adopt(pos);
    });
    c.sseStarted = true;
  }

  private parseJson(s: string): Record<string, unknown> | null {
    try {
      const v: unknown = JSON.parse(s);
      return typeof v === "object" && v !== null ? (v as Record<string, unknown>) : null;
    } catch {
      return null;
    }
  }

  /** The stream's channels changed: reopen it (once per turn of the event loop). */
  private scheduleSseReopen(): void {
    if (this.sseReopen) return;
    this.sseReopen = true;
    setTimeout(() => {
      this.sseReopen = false;
      const c = this.conn;
      if (!c || c.kind !== "sse" || !c.ready || this.current !== "connected") return;
      const wanted = [...this.subs.keys()];
      if (wanted.length === c.channels.length && wanted.every((ch, i) => ch === c.channels[i])) return;
      c.transport?.close();
      for (const s of this.subs.values()) s._reset();
      this.stopLiveness();
      this.conn = null;
      this.runAttempt();
    }, 0);
  }

  // ---- liveness ---------------------------------------------------------------

  /**
   * WebSocket: after `heartbeat_ms` of silence a `ping` frame is sent (the
   * server answers `pong`); silent for twice `heartbeat_ms`, the connection
   * is dropped and reopened. SSE: the server's `: ping` comments every
   * `sseHeartbeatMs`; silent for twice that, the same.
   */
  private startLiveness(c: Conn): void {
    this.stopLiveness();
    c.lastRx = Date.now();
    const every = Math.max(50, Math.floor(c.heartbeatMs / 4));
    this.livenessTimer = setInterval(() => {
      if (this.conn !== c) return;
      const silent = Date.now() - c.lastRx;
      if (silent >= 2 * c.heartbeatMs) {
        c.transport?.close(4000, "liveness timeout");
        this.onClose(c, { reason: "liveness_timeout", opened: true });
      } else if (silent >= c.heartbeatMs && !c.pingSent && c.kind === "websocket") {
        c.pingSent = c.transport?.send({ type: "ping" }) ?? false;
      }
    }, every);
  }

  private stopLiveness(): void {
    clearInterval(this.livenessTimer);
    this.livenessTimer = undefined;
  }

  // ---- closing ------------------------------------------------------------------

  private failPending(c: Conn): void {
    for (const q of c.pending.values()) {
      for (const p of q) {
        if (p.kind === "publish" && !p.settled) {
          this.settle(c, p);
          p.reject?.(new PushError("disconnected", "the connection closed before the publish was answered (it may have happened)"));
        }
      }
    }
    c.pending.clear();
  }

  /** A transport of connection `c` ended: decide what comes next. */
  private onClose(c: Conn, info: CloseInfo): void {
    if (this.conn !== c) return;
    this.conn = null;
    clearTimeout(this.connectTimer);
    this.stopLiveness();
    this.failPending(c);
    for (const s of this.subs.values()) s._reset();
    if (this.current === "disconnected") return;

    const reason = c.reconnect?.reason;
    this.lastReconnectReason = reason;
    const code = info.errorCode;
    const auth =
      info.status === 401 || (code !== undefined && AUTH_CODES.has(code)) || reason === "token_expired" || info.code === 1008;
    // `auto`: a WebSocket handshake that failed is tried again at once over SSE.
    if (c.kind === "websocket" && !c.ready && this.transportKind === "auto" && !auth && info.status !== 503 && info.status !== 429) {
      if (!this.autoSse) {
        this.autoSse = true;
        this.scheduleAttempt(0, { reason: info.reason, info });
        return;
      }
    } else if (c.kind === "sse" && !c.ready && this.autoSse && !this.autoStickSse) {
      this.autoSse = false; // neither worked: start from WebSocket next time
    }
    if (auth) {
      if (this.tokenFresh && info.status === 401) this.authRefusals++;
      if (this.getToken && this.authRefusals < MAX_AUTH_REFUSALS) {
        this.tokenStale = true;
        const delay =
          reason === "token_expired"
            ? serverDelay(0, { retryMs: c.reconnect?.retryMs })
            : this.authRefusals === 0
              ? 0
              : this.nextBackoff();
        this.scheduleAttempt(delay, { reason: reason ?? code ?? "unauthorized", info });
        return;
      }
      // A WebSocket handshake tells only the status: the token's own exp says which.
      const expired = reason === "token_expired" || info.code === 1008 || isExpired(this.claims, Date.now());
      const e = code ?? (expired ? "token_expired" : "unauthorized");
      this.emit("error", { code: e, message: info.errorMessage ?? `the server refused the token (${e})` });
      this.stop({ reason: e, willReconnect: false, info });
      return;
    }
    if (!c.ready && info.status !== undefined && info.status >= 400 && info.status < 500 && info.status !== 429 && info.status !== 408) {
      if (code === undefined || FATAL_CODES.has(code) || info.status === 403 || info.status === 400) {
        const e = code ?? `http_${info.status}`;
        this.emit("error", { code: e, message: info.errorMessage ?? `the server refused the connection (HTTP ${info.status})` });
        this.stop({ reason: e, willReconnect: false, info });
        return;
      }
    }
    this.retryLater(info, c.reconnect?.retryMs, reason);
  }

  private nextBackoff(): number {
    const d = backoffDelay(this.attempt, {
      minDelayMs: this.opts.minReconnectDelayMs,
      maxDelayMs: this.opts.maxReconnectDelayMs,
    });
    this.attempt++;
    return d;
  }

  /** Reconnect after a delay: the server's when it gave one, else backoff. */
  private retryLater(info: CloseInfo, retryMs?: number, reason?: string): void {
    const delay =
      retryMs !== undefined
        ? serverDelay(0, { retryMs })
        : serverDelay(this.nextBackoff(), { retryAfterS: info.retryAfterS });
    this.scheduleAttempt(delay, { reason: reason ?? info.errorCode ?? info.reason, info });
  }

  private scheduleAttempt(delayMs: number, why: { reason: string; info?: CloseInfo }): void {
    this.clearTimers();
    this.gen++;
    this.setState("connecting");
    const e: ClientEvents["disconnected"] = { reason: why.reason, willReconnect: true, delayMs };
    if (why.info?.code !== undefined) e.code = why.info.code;
    if (why.info?.status !== undefined) e.status = why.info.status;
    this.emit("disconnected", e);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.current === "connecting") this.runAttempt();
    }, delayMs);
  }

  private stop(why: { reason: string; willReconnect: false; info?: CloseInfo }): void {
    this.gen++;
    this.clearTimers();
    const c = this.conn;
    this.conn = null;
    if (c) {
      c.transport?.close(1000, "client closed");
      this.failPending(c);
    }
    for (const s of this.subs.values()) s._reset();
    const was = this.current;
    this.setState("disconnected");
    if (was !== "disconnected") {
      const e: ClientEvents["disconnected"] = { reason: why.reason, willReconnect: false };
      if (why.info?.code !== undefined) e.code = why.info.code;
      if (why.info?.status !== undefined) e.status = why.info.status;
      this.emit("disconnected", e);
    }
  }

  private clearTimers(): void {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    clearTimeout(this.connectTimer);
    this.stopLiveness();
  }

  private setState(s: ConnectionState): void {
    if (this.current === s) return;
    this.current = s;
    this.emit("state", s);
  }
}
