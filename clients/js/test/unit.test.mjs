// Unit tests of @push-dev/client without a server: backoff, ids and
// cursors, the SSE parser, dedup and acks of a subscription, and the
// connection state machine driven through a scripted WebSocket.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  PushClient,
  SseParser,
  backoffDelay,
  compareIds,
  formatCursor,
  isMessageId,
  parseCursor,
  serverDelay,
} from "@push-dev/client";
import { waitFor } from "./helpers.mjs";

test("backoff: exponential with full jitter, capped", () => {
  const o = { minDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(backoffDelay(0, o, () => 0), 0, "full jitter reaches 0");
  assert.equal(backoffDelay(0, o, () => 0.999999), 99);
  assert.equal(backoffDelay(1, o, () => 0.999999), 199);
  assert.equal(backoffDelay(3, o, () => 0.999999), 799);
  assert.equal(backoffDelay(4, o, () => 0.999999), 999, "capped at maxDelayMs");
  assert.equal(backoffDelay(500, o, () => 0.5), 500, "huge attempts do not overflow");
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(2, o);
    assert.ok(d >= 0 && d < 400);
    seen.add(Math.floor(d / 100));
  }
  assert.ok(seen.size >= 3, "delays are spread");
  // The server's retry_ms wins over a smaller backoff; Retry-After is spread ±50 %.
  assert.equal(serverDelay(10, { retryMs: 1500 }), 1500);
  assert.equal(serverDelay(2000, { retryMs: 1500 }), 2000);
  assert.equal(serverDelay(0, { retryAfterS: 2 }, () => 0), 1000);
  assert.equal(serverDelay(0, { retryAfterS: 2 }, () => 0.999), 2998);
  assert.equal(serverDelay(7, {}), 7);
});

test("ids compare as (ms, seq) without float loss; cursors parse strictly", () => {
  assert.ok(compareIds("1-0", "2-0") < 0);
  assert.ok(compareIds("10-0", "9-5") > 0, "numeric, not lexicographic");
  assert.ok(compareIds("5-10", "5-9") > 0);
  assert.equal(compareIds("7-3", "7-3"), 0);
  // Beyond 2^53, where Number would round both to the same value.
  assert.ok(compareIds("9007199254740993-0", "9007199254740992-0") > 0);
  assert.throws(() => compareIds("x", "1-0"), TypeError);
  assert.ok(isMessageId("1732800000000-0"));
  for (const bad of ["", "1", "1-", "-1", "01-0", "1-2-3", "a-b", " 1-0"]) assert.ok(!isMessageId(bad), bad);
  assert.deepEqual(parseCursor("1-2,30-0", 2), ["1-2", "30-0"]);
  assert.deepEqual(parseCursor("1-2", 1), ["1-2"]);
  for (const bad of ["", "1-2", "1-2,3", "1-2,,3-4", "x", "1-2,3-4,5-6"]) assert.equal(parseCursor(bad, 2), null, bad);
  assert.equal(formatCursor(["1-2", "30-0"]), "1-2,30-0");
});

test("SSE parser: events split anywhere, CRLF, comments, id-only events, size bound", () => {
  const events = [];
  const p = new SseParser((e) => events.push(e), 64);
  const stream =
    "retry: 2000\r\n\r\n: ping\r\n\r\nid: 1-0,2-0\r\n\r\nid: 3-0,2-0\nevent: message\ndata: {\"a\":\ndata: 1}\n\nevent: reset\rdata: {\"channel\":\"x\"}\r\r";
  for (const ch of stream) p.feed(ch); // one character at a time
  assert.deepEqual(events, [
    { event: "message", data: "", id: "1-0,2-0" },
    { event: "message", data: '{"a":\n1}', id: "3-0,2-0" },
    { event: "reset", data: '{"channel":"x"}', id: undefined },
  ]);
  assert.throws(() => p.feed(`data: ${"x".repeat(100)}`), /larger than 64/);
});

// ---- a scripted WebSocket ------------------------------------------------

class FakeSocket {
  static all = [];
  readyState = 0;
  sent = [];
  onopen = null;
  onmessage = null;
  onerror = null;
  onclose = null;
  constructor(url) {
    this.url = new URL(url);
    FakeSocket.all.push(this);
  }
  send(s) {
    this.sent.push(JSON.parse(s));
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closedBy = { code, reason };
  }
  // test side
  open(heartbeatMs = 25000) {
    this.readyState = 1;
    this.onopen?.({});
    this.frame({ type: "welcome", connection_id: String(FakeSocket.all.length), heartbeat_ms: heartbeatMs });
  }
  frame(f) {
    this.onmessage?.({ data: JSON.stringify(f) });
  }
  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  refuse(status) {
    this.onerror?.({ message: `Unexpected server response: ${status}` });
    this.serverClose(1006);
  }
}
const last = () => FakeSocket.all.at(-1);
const nextSocket = (n) => waitFor(`socket #${n}`, () => FakeSocket.all.length >= n && FakeSocket.all[n - 1]);

// Every client of a test is stopped after it, also when an assertion
// failed midway (its timers would otherwise keep the run alive).
const live = [];
afterEach(() => {
  while (live.length) live.pop().disconnect();
});

function fakeClient(opts = {}) {
  FakeSocket.all = [];
  const c = new PushClient("http://push.test:8080/base/", {
    transport: "websocket",
    WebSocket: FakeSocket,
    fetch: async () => {
      throw new Error("no HTTP in unit tests");
    },
    minReconnectDelayMs: 10,
    maxReconnectDelayMs: 20,
    ...opts,
  });
  live.push(c);
  return c;
}

test("state machine: connect, subscribe, resume with since, server reconnect, disconnect", async () => {
  const c = fakeClient({ token: "opaque" });
  const states = [];
  c.on("state", (s) => states.push(s));
  const sub = c.subscribe("news");
  const msgs = [];
  sub.on("message", (m) => msgs.push(m.id));
  const subscribed = [];
  sub.on("subscribed", (e) => subscribed.push(e));
  c.connect();
  assert.equal(c.state, "connecting");
  const s1 = await nextSocket(1);
  assert.equal(s1.url.href, "ws://push.test:8080/base/ws?token=opaque");
  s1.open();
  assert.equal(c.state, "connected");
  assert.deepEqual(s1.sent, [{ type: "subscribe", channel: "news" }], "queued subscription sent on welcome");
  s1.frame({ type: "subscribed", channel: "news", recovered: true, position: "5-0" });
  s1.frame({ type: "message", channel: "news", id: "6-0", data: 1 });
  s1.frame({ type: "message", channel: "news", id: "6-0", data: 1 }); // duplicate
  s1.frame({ type: "message", channel: "news", id: "7-0", data: 2 });
  s1.frame({ type: "message", channel: "news", id: "5-3", data: 0 }); // older: redelivery
  assert.deepEqual(msgs, ["6-0", "7-0"]);
  assert.equal(sub.lastId, "7-0");

  // Subscribing while connected sends at once; unsubscribing too.
  const other = c.subscribe("other");
  assert.deepEqual(s1.sent.at(-1), { type: "subscribe", channel: "other" });
  other.unsubscribe();
  assert.deepEqual(s1.sent.at(-1), { type: "unsubscribe", channel: "other" });

  // The server drains: reconnect after its retry_ms, resume after 7-0.
  const t0 = Date.now();
  s1.frame({ type: "reconnect", reason: "draining", retry_ms: 150 });
  s1.serverClose(1001, "draining");
  assert.equal(c.state, "connecting");
  const s2 = await nextSocket(2);
  assert.ok(Date.now() - t0 >= 140, "waited for retry_ms");
  s2.open();
  assert.deepEqual(s2.sent, [{ type: "subscribe", channel: "news", since: "7-0" }]);
  s2.frame({ type: "subscribed", channel: "news", recovered: true, position: "9-0" });
  s2.frame({ type: "message", channel: "news", id: "7-0", data: 2 });
  s2.frame({ type: "message", channel: "news", id: "8-0", data: 3 });
  assert.deepEqual(msgs, ["6-0", "7-0", "8-0"]);
  assert.deepEqual(subscribed.map((e) => [e.recovered, e.resubscribed]), [[true, false], [true, true]]);

  c.disconnect();
  assert.equal(s2.closedBy.code, 1000);
  assert.equal(c.state, "disconnected");
  assert.deepEqual(states, ["connecting", "connected", "connecting", "connected", "disconnected"]);
  await new Promise((r) => setTimeout(r, 60)); // longer than any backoff here
  assert.equal(FakeSocket.all.length, 2, "no reconnect after disconnect()");
});

test("gap: recovered:false is surfaced once and dedup restarts from what follows", async () => {
  const c = fakeClient();
  const sub = c.subscribe("news", { since: "100-0" });
  const gaps = [];
  const msgs = [];
  sub.on("gap", (g) => gaps.push(g));
  sub.on("message", (m) => msgs.push(m.id));
  c.connect();
  const s = await nextSocket(1);
  s.open();
  assert.deepEqual(s.sent, [{ type: "subscribe", channel: "news", since: "100-0" }]);
  s.frame({ type: "subscribed", channel: "news", recovered: false, position: "50-0" });
  s.frame({ type: "message", channel: "news", id: "40-0", data: null }); // retained, after a restart's clock
  assert.deepEqual(gaps, [{ channel: "news", reason: "recovered_false", since: "100-0", brokerGap: false }]);
  assert.deepEqual(msgs, []);
  s.frame({ type: "message", channel: "news", id: "51-0", data: null });
  assert.deepEqual(msgs, ["51-0"]);
  c.disconnect();
});

test("acks: sent when the handler settles, once; redeliveries never call it twice", async () => {
  const c = fakeClient();
  const sub = c.subscribe("jobs", { ack: true });
  let release;
  const gate = new Promise((r) => (release = r));
  const calls = [];
  let fail = true;
  sub.on("message", async (m) => {
    calls.push(m.id);
    if (m.id === "2-0") await gate;
    if (m.id === "3-0" && fail) {
      fail = false;
      throw new Error("boom");
    }
  });
  const errors = [];
  sub.on("error", (e) => errors.push(e.code));
  c.connect();
  const s = await nextSocket(1);
  s.open();
  assert.deepEqual(s.sent, [{ type: "subscribe", channel: "jobs", ack: true }]);
  s.frame({ type: "subscribed", channel: "jobs", recovered: true, position: "1-0" });
  for (const id of ["2-0", "3-0", "4-0"]) s.frame({ type: "message", channel: "jobs", id, data: {} });
  const acks = () => s.sent.filter((f) => f.type === "ack").map((f) => f.id);
  await waitFor("acks of 4-0", () => acks().includes("4-0"));
  assert.deepEqual(acks(), ["4-0"], "2-0 still running, 3-0 failed");
  s.frame({ type: "message", channel: "jobs", id: "2-0", data: {} }); // redelivery while running
  s.frame({ type: "message", channel: "jobs", id: "4-0", data: {} }); // redelivery of an acked one
  s.frame({ type: "message", channel: "jobs", id: "3-0", data: {} }); // redelivery of the failed one: retried
  release();
  await waitFor("every ack", () => acks().length === 3);
  assert.deepEqual(acks().sort(), ["2-0", "3-0", "4-0"]);
  assert.deepEqual(calls, ["2-0", "3-0", "4-0", "3-0"]);
  assert.deepEqual(errors, ["handler_failed"]);
  c.disconnect();
});

test("close codes: token expired without getToken stops; with getToken refreshes", async () => {
  const c = fakeClient({ token: "static" });
  const errors = [];
  c.on("error", (e) => errors.push(e.code));
  c.connect();
  const s = await nextSocket(1);
  s.open();
  s.frame({ type: "reconnect", reason: "token_expired", retry_ms: 10 });
  s.serverClose(1008, "token expired");
  assert.equal(c.state, "disconnected");
  assert.deepEqual(errors, ["token_expired"]);

  let n = 0;
  const r = fakeClient({ getToken: async () => `t${++n}` });
  r.connect();
  const a = await nextSocket(1);
  assert.equal(a.url.searchParams.get("token"), "t1");
  a.open();
  a.serverClose(1008, "token expired");
  const b = await nextSocket(2);
  assert.equal(b.url.searchParams.get("token"), "t2", "a new token after 1008");
  b.refuse(401); // a 401 at the handshake: getToken again
  const d = await nextSocket(3);
  assert.equal(d.url.searchParams.get("token"), "t3");
  d.refuse(401);
  const e = await nextSocket(4);
  e.refuse(401); // three fresh tokens refused in a row: stop
  await waitFor("stopped", () => r.state === "disconnected");
  assert.equal(n, 4);
  // A slow consumer kick reconnects (1013).
  const k = fakeClient();
  k.connect();
  const k1 = await nextSocket(1);
  k1.open();
  k1.frame({ type: "reconnect", reason: "slow_consumer", retry_ms: 10 });
  k1.serverClose(1013, "slow consumer");
  assert.equal(k.state, "connecting");
  (await nextSocket(2)).open();
  assert.equal(k.state, "connected");
  k.disconnect();
});

test("liveness: silent for heartbeat_ms sends a ping, for twice that reconnects", async () => {
  const c = fakeClient();
  const reasons = [];
  c.on("disconnected", (d) => reasons.push(d.reason));
  c.connect();
  const s = await nextSocket(1);
  s.open(100);
  await waitFor("a ping", () => s.sent.some((f) => f.type === "ping"), 2000);
  await nextSocket(2);
  assert.equal(s.closedBy.code, 4000);
  assert.deepEqual(reasons, ["liveness_timeout"]);
  // A pong keeps a connection alive.
  const s2 = last();
  s2.open(200);
  const started = Date.now();
  while (Date.now() - started < 700) {
    if (s2.sent.at(-1)?.type === "ping") s2.frame({ type: "pong" });
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(FakeSocket.all.length, 2, "answered pings keep the connection");
  c.disconnect();
});
