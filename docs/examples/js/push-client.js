// A small browser client for Push: WebSocket and Server-Sent Events, both
// resuming after a disconnect with no gap and no duplicate (docs/protocol.md).
//
//   import { connectWebSocket, connectEventSource } from "./push-client.js";
//   const ws = connectWebSocket({ url: "ws://localhost:8080/ws", channels: ["news"],
//                                 onMessage: (m) => console.log(m.channel, m.id, m.data) });
//   const sse = connectEventSource({ url: "http://localhost:8080/sse", channels: ["news"],
//                                    onMessage: (m) => console.log(m) });
//   ws.close(); sse.close();
//
// Tested in headless Chromium against a real push-server, including a forced
// reconnect: docs/examples/js/test/browser.test.mjs (`make test-browser`).

// WebSocket: the client keeps, per channel, the id of the last message it got
// (or the `position` of its `subscribed` answer) and subscribes again with
// `since` after every reconnect. The server then sends what was missed and
// continues live, never twice and never with a hole. `recovered: false` means
// the missed messages are older than the server's history: `onReset` tells
// the application to reload its state.
export function connectWebSocket({
  url,
  channels,
  token,
  onMessage = () => {},
  onReset = () => {},
  onStatus = () => {},
  onSubscribed = () => {},
}) {
  const lastIds = new Map(); // channel -> last id seen
  let socket = null;
  let closed = false;
  let attempt = 0;
  let timer = null;

  function open() {
    const u = new URL(url);
    if (token) u.searchParams.set("token", token);
    socket = new WebSocket(u);
    onStatus("connecting");
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      switch (frame.type) {
        case "welcome":
          attempt = 0;
          onStatus("open");
          for (const channel of channels) {
            const since = lastIds.get(channel);
            socket.send(JSON.stringify({ type: "subscribe", channel, ...(since ? { since } : {}) }));
          }
          break;
        case "subscribed":
          if (frame.recovered === false) onReset(frame.channel);
          if (!lastIds.has(frame.channel) || frame.recovered === false) {
            if (frame.position) lastIds.set(frame.channel, frame.position);
          }
          onSubscribed(frame.channel);
          break;
        case "message":
          lastIds.set(frame.channel, frame.id);
          onMessage({ channel: frame.channel, id: frame.id, data: frame.data });
          break;
        case "reconnect":
          // draining, max_lifetime, slow_consumer, token_expired: the server
          // closes the socket next; come back after the delay it asks for.
          schedule(frame.retry_ms);
          break;
        case "error":
          console.warn("push error", frame.code, frame.message, frame.channel ?? "");
          break;
      }
    };
    socket.onclose = () => {
      onStatus("closed");
      if (!closed && timer === null) schedule();
    };
  }

  // Exponential backoff with jitter, 250 ms .. 10 s, unless the server said when.
  function schedule(delayMs) {
    if (closed) return;
    clearTimeout(timer);
    const backoff = Math.min(10000, 250 * 2 ** attempt++);
    const delay = delayMs ?? backoff / 2 + Math.random() * (backoff / 2);
    timer = setTimeout(() => {
      timer = null;
      open();
    }, delay);
  }

  open();
  return {
    lastIds,
    close() {
      closed = true;
      clearTimeout(timer);
      socket?.close();
    },
  };
}

// SSE: the browser itself reconnects after the `retry:` delay and sends the
// last event id (a cursor covering every channel of the stream) as
// Last-Event-ID, so the server resumes each channel where it stopped. When
// the browser gives up instead (the server answered with an error status,
// e.g. 503 while a node drains), a new EventSource is opened with the cursor
// in the `lastEventId` query parameter, which the server treats the same way.
export function connectEventSource({
  url,
  channels,
  token,
  onMessage = () => {},
  onReset = () => {},
  onStatus = () => {},
}) {
  // The cursor of the last message event. (The id-only event the server sends
  // right after connecting moves the browser's own Last-Event-ID but is not
  // dispatched to scripts, so a stream that got no message yet and then fails
  // for good restarts from "now".)
  let cursor = null;
  let source = null;
  let closed = false;
  let attempt = 0;
  let timer = null;

  function open() {
    const u = new URL(url);
    u.searchParams.set("channels", channels.join(","));
    if (token) u.searchParams.set("token", token);
    if (cursor) u.searchParams.set("lastEventId", cursor);
    source = new EventSource(u);
    onStatus("connecting");
    source.onopen = () => {
      attempt = 0;
      onStatus("open");
    };
    source.addEventListener("message", (event) => {
      cursor = event.lastEventId;
      const envelope = JSON.parse(event.data);
      onMessage({ channel: envelope.channel, id: envelope.id, data: envelope.data });
    });
    source.addEventListener("reset", (event) => {
      onReset(JSON.parse(event.data).channel);
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CONNECTING) {
        onStatus("reconnecting");
        return; // the browser retries by itself, with Last-Event-ID
      }
      onStatus("closed");
      if (closed) return;
      const backoff = Math.min(10000, 500 * 2 ** attempt++);
      clearTimeout(timer);
      timer = setTimeout(open, backoff / 2 + Math.random() * (backoff / 2));
    };
  }

  open();
  return {
    get cursor() {
      return cursor;
    },
    close() {
      closed = true;
      clearTimeout(timer);
      source?.close();
    },
  };
}
