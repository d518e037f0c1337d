// The two transports, reduced to what the client needs: frames in, frames
// out, and one `onClose` with everything known about why it closed. Neither
// keeps state of its own beyond the socket or stream.

import { SseParser } from "./sse.js";

/** Why a transport ended (whatever it was: refused handshake, close, drop). */
export interface CloseInfo {
  /** WebSocket close code, when there was one. */
  code?: number;
  /** Close reason text, or what failed. */
  reason: string;
  /** HTTP status of a refused handshake / stream request, when known. */
  status?: number;
  /** `error.code` of a refused request's JSON body, when known. */
  errorCode?: string;
  errorMessage?: string;
  /** `Retry-After` of a refused request (seconds), when readable. */
  retryAfterS?: number;
  /** Whether the handshake had completed (WebSocket open / SSE 200). */
  opened: boolean;
}

export interface TransportHandlers {
  /** The handshake completed (WebSocket `open`, SSE `200`). */
  onOpen(): void;
  /** A parsed JSON frame (WebSocket) or event (SSE, see SseFrame). */
  onFrame(frame: Record<string, unknown>): void;
  /** Any bytes arrived (liveness). */
  onActivity(): void;
  /** Called once, unless the client closed the transport itself. */
  onClose(info: CloseInfo): void;
}

export interface Transport {
  send(frame: object): boolean;
  /** Closes without calling onClose. */
  close(code?: number, reason?: string): void;
}

/** The subset of the WHATWG WebSocket that the client uses (also `ws`'s). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

let wsModule: Promise<WebSocketConstructor> | undefined;

/** The runtime's WebSocket, else the `ws` package (Node 20). */
export function resolveWebSocket(explicit?: WebSocketConstructor): Promise<WebSocketConstructor> {
  if (explicit) return Promise.resolve(explicit);
  const g = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof g === "function") return Promise.resolve(g);
  // A variable specifier: bundlers leave it alone, so browser builds never
  // try to resolve `ws`.
  const name = "ws";
  wsModule ??= (import(name) as Promise<{ WebSocket?: WebSocketConstructor; default?: WebSocketConstructor }>)
    .then((m) => {
      const ctor = m.WebSocket ?? m.default;
      if (typeof ctor !== "function") throw new Error("the ws package exports no WebSocket");
      return ctor;
    })
    .catch((e: unknown) => {
      wsModule = undefined;
      throw new Error(
        `no global WebSocket in this runtime and the optional peer dependency "ws" cannot be loaded (npm i ws): ${String(e)}`,
      );
    });
  return wsModule;
}

const OPEN = 1;

export function openWebSocket(url: string, ctor: Promise<WebSocketConstructor>, h: TransportHandlers): Transport {
  let socket: WebSocketLike | null = null;
  let done = false;
  let opened = false;
  let status: number | undefined;
  const finish = (info: CloseInfo) => {
    if (done) return;
    done = true;
    h.onClose(info);
  };
  ctor.then(
    (Ctor) => {
      if (done) return;
      try {
        socket = new Ctor(url);
      } catch (e) {
        finish({ reason: `cannot open WebSocket: ${String(e)}`, opened: false });
        return;
      }
      socket.onopen = () => {
        opened = true;
        h.onActivity();
        h.onOpen();
      };
      socket.onmessage = (ev) => {
        if (done) return;
        h.onActivity();
        if (typeof ev.data !== "string") return; // Push sends text frames only
        let frame: unknown;
        try {
          frame = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (typeof frame === "object" && frame !== null && !Array.isArray(frame)) {
          h.onFrame(frame as Record<string, unknown>);
        }
      };
      socket.onerror = (ev) => {
        // Browsers tell nothing; `ws` says "Unexpected server response: 401".
        const m = /Unexpected server response: (\d{3})/.exec(String((ev as { message?: unknown })?.message ?? ""));
        if (m) status = Number(m[1]);
      };
      socket.onclose = (ev) => {
        const info: CloseInfo = { reason: ev.reason || (opened ? "connection closed" : "handshake failed"), opened };
        if (typeof ev.code === "number") info.code = ev.code;
        if (status !== undefined) info.status = status;
        finish(info);
      };
    },
    (e: unknown) => finish({ reason: String(e instanceof Error ? e.message : e), errorCode: "no_websocket", opened: false }),
  );
  return {
    send(frame) {
      if (done || !socket || socket.readyState !== OPEN) return false;
      try {
        socket.send(JSON.stringify(frame));
        return true;
      } catch {
        return false;
      }
    },
    close(code = 1000, reason = "client closed") {
      done = true;
      if (socket) {
        try {
          socket.close(code, reason);
        } catch {
          // already closing
        }
      }
    },
  };
}

/** Reads at most `limit` characters of a body (error answers are small). */
async function readSmall(res: Response, limit = 64 * 1024): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      if (text.length > limit) break;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return text.slice(0, limit);
}

/** The `{"error":{code,message}}` of an error answer, when it has one. */
export async function readError(res: Response): Promise<{ code?: string; message?: string }> {
  try {
    const v = JSON.parse(await readSmall(res)) as { error?: { code?: unknown; message?: unknown } };
    const out: { code?: string; message?: string } = {};
    if (typeof v.error?.code === "string") out.code = v.error.code;
    if (typeof v.error?.message === "string") out.message = v.error.message;
    return out;
  } catch {
    return {};
  }
}

/**
 * An SSE stream as frames: `{type:"sse", event, data, id}` for every event
 * (message, reset, reconnect, and the id-only event), parsed by the client.
 */
export function openSse(
  url: string,
  fetchImpl: typeof fetch,
  maxEventBytes: number,
  h: TransportHandlers,
): Transport {
  const abort = new AbortController();
  let done = false;
  let opened = false;
  const finish = (info: CloseInfo) => {
    if (done) return;
    done = true;
    abort.abort();
    h.onClose(info);
  };
  (async () => {
    let res: Response;
    try {
      res = await fetchImpl(url, { headers: { accept: "text/event-stream" }, signal: abort.signal });
    } catch (e) {
      finish({ reason: `SSE request failed: ${String(e instanceof Error ? e.message : e)}`, opened: false });
      return;
    }
    if (done) return;
    if (res.status !== 200 || !res.body) {
      const err = await readError(res);
      const info: CloseInfo = { reason: err.message ?? `HTTP ${res.status}`, status: res.status, opened: false };
      if (err.code) info.errorCode = err.code;
      if (err.message) info.errorMessage = err.message;
      const ra = Number(res.headers.get("retry-after"));
      if (res.headers.get("retry-after") !== null && Number.isFinite(ra)) info.retryAfterS = ra;
      finish(info);
      return;
    }
    opened = true;
    h.onActivity();
    h.onOpen();
    const parser = new SseParser((e) => {
      if (!done) h.onFrame({ type: "sse", event: e.event, data: e.data, id: e.id });
    }, maxEventBytes);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { done: end, value } = await reader.read();
        if (done) return;
        if (end) break;
        h.onActivity();
        parser.feed(decoder.decode(value, { stream: true }));
      }
      finish({ reason: "stream ended", opened });
    } catch (e) {
      finish({ reason: `stream failed: ${String(e instanceof Error ? e.message : e)}`, opened });
    } finally {
      reader.cancel().catch(() => {});
    }
  })().catch((e: unknown) => finish({ reason: String(e), opened }));
  return {
    send() {
      return false; // SSE is one-way: subscriptions change by reopening
    },
    close() {
      done = true;
      abort.abort();
    },
  };
}
