// @push-dev/client in Node against real push-server processes (and a real
// redis-server where a restart must lose nothing). Every case of issue 15:
// live delivery, node restarts (memory: gap; Redis: no gap), drain and
// max_connection_lifetime reconnects, token refresh, acks, `auto` fallback.
//
// Run: make test-client, or `npm test` here with PUSH_SERVER_BIN set.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { PushClient } from "@push-dev/client";
import {
  assertExactly,
  cleanupAll,
  hs256,
  nextEvent,
  publish,
  record,
  startProxy,
  startPublisher,
  startRedis,
  startServer,
  waitFor,
  waitForAll,
} from "./helpers.mjs";

after(cleanupAll);

const fast = { minReconnectDelayMs: 50, maxReconnectDelayMs: 1000 };
const transports = ["websocket", "sse"];

function client(base, opts = {}) {
  const c = new PushClient(base, { ...fast, ...opts });
  after(() => c.disconnect());
  return c;
}

const only = (list, channel) => list.filter((m) => m.channel === channel);

test("live delivery over WebSocket and SSE; subscribe and unsubscribe at any time", async () => {
  const server = await startServer();
  for (const transport of transports) {
    const c = client(server.base, { transport });
    const news = c.subscribe("news");
    const r = record(c, news);
    const sportsMsgs = [];
    const sports = c.subscribe("sports");
    sports.on("message", (m) => sportsMsgs.push(m));
    const states = [];
    c.on("state", (s) => states.push(s));
    c.connect();
    await nextEvent(c, "connected");
    await waitFor(`${transport}: both subscribed`, () => news.state === "subscribed" && sports.state === "subscribed");
    assert.equal(c.transport, transport);

    const want = [];
    for (let i = 1; i <= 5; i++) want.push(await publish(server.base, i % 2 ? "news" : "sports", { i, transport }));
    // client.publish goes over HTTP here (no token): same path, same id.
    want.push({ ...(await c.publish("news", { i: 6, transport })), data: { i: 6, transport } });
    await waitFor(`${transport}: live messages`, () => r.messages.length + sportsMsgs.length >= want.length);
    assertExactly(r.messages, only(want, "news"), `${transport} news`);
    assertExactly(sportsMsgs, only(want, "sports"), `${transport} sports`);

    // Subscribed later, while connected; and one unsubscribed.
    const late = c.subscribe("late");
    const lateMsgs = [];
    late.on("message", (m) => lateMsgs.push(m));
    await waitFor(`${transport}: late subscription`, () => late.state === "subscribed");
    sports.unsubscribe();
    assert.equal(c.getSubscription("sports"), undefined);
    await waitFor(`${transport}: stream without sports`, async () => {
      // After the unsubscribe took effect the server counts no subscriber.
      const p = await c.presence("sports");
      return p.connections === 0;
    });
    const more = [await publish(server.base, "late", { x: 1 }), await publish(server.base, "sports", { x: 2 })];
    const nudge = await publish(server.base, "news", { x: 3 });
    await waitFor(`${transport}: late message`, () => lateMsgs.length >= 1);
    await waitFor(`${transport}: news after the changes`, () => r.messages.some((m) => m.id === nudge.id));
    assertExactly(lateMsgs, [more[0]], `${transport} late`);
    assert.equal(sportsMsgs.length, only(want, "sports").length, `${transport}: nothing after unsubscribe`);
    assertExactly(r.messages, [...only(want, "news"), nudge], `${transport} news, no duplicate across the stream change`);

    const h = await c.history("news", { limit: 100 });
    assert.ok(h.messages.length >= 4 && h.recovered);
    assert.deepEqual(r.gaps, []);
    c.disconnect();
    assert.equal(c.state, "disconnected");
    assert.deepEqual(states.slice(-1), ["disconnected"]);
  }
});

test("memory broker: a node restarted under the client gives `gap`", async () => {
  const server = await startServer();
  const clients = transports.map((transport) => {
    const c = client(server.base, { transport });
    const sub = c.subscribe("news");
    const r = record(c, sub);
    c.connect();
    return { transport, c, sub, r };
  });
  await waitFor("subscribed", () => clients.every((x) => x.sub.state === "subscribed"));
  const before = [];
  for (let i = 0; i < 3; i++) before.push(await publish(server.base, "news", { i }));
  await waitFor("messages before the restart", () => clients.every((x) => x.r.messages.length === 3));

  await server.kill("SIGKILL");
  await waitFor("clients notice", () => clients.every((x) => x.c.state === "connecting"));
  await server.start();
  await waitFor("gap after the restart", () => clients.every((x) => x.r.gaps.length === 1), 30000);
  for (const x of clients) {
    const gap = x.r.gaps[0];
    assert.equal(gap.channel, "news");
    assert.equal(gap.since, before[2].id, `${x.transport}: the gap starts at the last id seen`);
    assert.equal(gap.reason, x.transport === "websocket" ? "recovered_false" : "reset");
    assert.equal(x.r.subscribed.at(-1).recovered, false);
  }
  const afterMsgs = [await publish(server.base, "news", { after: 1 })];
  await waitFor("live after the gap", () => clients.every((x) => x.r.messages.length === 4));
  for (const x of clients) assertExactly(x.r.messages, [...before, ...afterMsgs], x.transport);
});

test("Redis broker: a node restarted under the client resumes with no gap and no duplicate while a publisher runs", async () => {
  const redis = await startRedis();
  // History deep enough for the whole outage (the default keeps 100).
  const args = ["--redis-url", redis.url, "--history-size", "10000"];
  const a = await startServer({ args });
  const b = await startServer({ args }); // the publisher's node
  const clients = transports.map((transport) => {
    const c = client(a.base, { transport });
    const sub = c.subscribe("feed");
    const r = record(c, sub);
    c.connect();
    return { transport, c, sub, r };
  });
  await waitFor("subscribed", () => clients.every((x) => x.sub.state === "subscribed"));
  const pub = startPublisher(b.base, ["feed"], { everyMs: 10 });
  await waitFor("traffic", () => clients.every((x) => x.r.messages.length >= 10));

  await a.kill("SIGKILL");
  await waitFor("clients notice", () => clients.every((x) => x.c.state === "connecting"));
  const during = pub.count();
  await waitFor("messages published while the node is down", () => pub.count() >= during + 20);
  await a.start();
  await waitFor("reconnected", () => clients.every((x) => x.r.connected.length >= 2), 30000);
  const reconnectedAt = pub.count();
  await waitFor("live traffic after the restart", () => pub.count() >= reconnectedAt + 20);
  const published = await pub.stop();
  await waitForAll("every message", clients, published);
  for (const x of clients) {
    assert.deepEqual(x.r.gaps, [], `${x.transport}: no gap`);
    assert.equal(x.r.subscribed.at(-1).recovered, true);
    assertExactly(x.r.messages, published, x.transport);
  }
});

test("draining and max_connection_lifetime reconnect without loss", async () => {
  // Drain: two nodes on Redis behind a proxy (the load balancer) that
  // moves to the other node when the first one starts draining.
  const redis = await startRedis();
  const args = ["--redis-url", redis.url, "--drain-period", "1s", "--history-size", "10000"];
  const a = await startServer({ args });
  const b = await startServer({ args });
  const lb = await startProxy(a.port);
  const clients = transports.map((transport) => {
    const c = client(lb.base, { transport });
    const sub = c.subscribe("orders");
    const r = record(c, sub);
    c.connect();
    return { transport, c, sub, r };
  });
  await waitFor("subscribed", () => clients.every((x) => x.sub.state === "subscribed"));
  const pub = startPublisher(b.base, ["orders"], { everyMs: 10 });
  await waitFor("traffic", () => clients.every((x) => x.r.messages.length >= 10));
  lb.target = b.port;
  await a.kill("SIGTERM");
  await waitFor("reconnected to the other node", () => clients.every((x) => x.r.connected.length >= 2), 30000);
  const at = pub.count();
  await waitFor("traffic after the drain", () => pub.count() >= at + 20);
  let published = await pub.stop();
  await waitForAll("every message", clients, published);
  for (const x of clients) {
    assert.ok(
      x.r.disconnected.some((d) => d.reason === "draining" && d.willReconnect),
      `${x.transport}: told to reconnect by the drain: ${JSON.stringify(x.r.disconnected)}`,
    );
    assert.deepEqual(x.r.gaps, []);
    assertExactly(x.r.messages, published, `${x.transport} (drain)`);
  }

  // Lifetime: one node that asks every connection to reconnect after ~1 s.
  const server = await startServer({ args: ["--max-connection-lifetime", "1s", "--history-size", "10000"] });
  const lifers = transports.map((transport) => {
    const c = client(server.base, { transport });
    const sub = c.subscribe("ticks");
    const r = record(c, sub);
    c.connect();
    return { transport, c, sub, r };
  });
  await waitFor("subscribed", () => lifers.every((x) => x.sub.state === "subscribed"));
  const pub2 = startPublisher(server.base, ["ticks"], { everyMs: 10 });
  await waitFor(
    "three lifetime reconnects each",
    () => lifers.every((x) => x.r.disconnected.filter((d) => d.reason === "max_lifetime").length >= 3),
    30000,
  );
  published = await pub2.stop();
  await waitForAll("every tick", lifers, published);
  for (const x of lifers) {
    assert.deepEqual(x.r.gaps, []);
    assertExactly(x.r.messages, published, `${x.transport} (lifetime)`);
  }
});

test("token expiry: refreshed through getToken, no message lost; a static expired token stops", async () => {
  const secret = "client-test-secret";
  const key = "client-test-publish-key";
  // The reconnect after `token_expired` waits the server's retry_ms with
  // jitter (up to ~2.5 s); at 50 msg/s that can outrun the default 100
  // messages of history and read as a `reset`, so history covers the test.
  const server = await startServer({ args: ["--jwt-secret", secret, "--publish-key", key, "--history-size", "10000"] });
  // Tokens valid ~1 s (+5 s of server leeway): the live connection is told
  // `token_expired` and the client must come back with a new token.
  const mint = (ttl) => hs256({ sub: "alice", exp: Math.floor(Date.now() / 1000) + ttl, channels: ["secure"] }, secret);
  const clients = transports.map((transport) => {
    let calls = 0;
    const c = client(server.base, {
      transport,
      getToken: async () => {
        calls++;
        return mint(1);
      },
    });
    const sub = c.subscribe("secure");
    const r = record(c, sub);
    c.connect();
    return { transport, c, sub, r, calls: () => calls };
  });
  await waitFor("subscribed", () => clients.every((x) => x.sub.state === "subscribed"));
  const pub = startPublisher(server.base, ["secure"], { everyMs: 20, key });
  await waitFor(
    "a token_expired reconnect and a second token",
    () => clients.every((x) => x.calls() >= 2 && x.r.connected.length >= 2 && x.sub.state === "subscribed"),
    30000,
  );
  const at = pub.count();
  await waitFor("traffic after the refresh", () => pub.count() >= at + 10);
  const published = await pub.stop();
  await waitForAll("every message", clients, published);
  for (const x of clients) {
    assert.ok(x.r.disconnected.some((d) => d.reason === "token_expired"), `${x.transport}: ${JSON.stringify(x.r.disconnected)}`);
    assertExactly(x.r.messages, published, x.transport);
  }

  // A 401 at connect calls getToken again (the first token is already expired).
  let calls = 0;
  const refreshed = client(server.base, {
    transport: "websocket",
    getToken: () => (++calls === 1 ? mint(-60) : mint(600)),
  });
  refreshed.connect();
  await nextEvent(refreshed, "connected");
  assert.equal(calls, 2);

  // A static token that is expired: no retry forever.
  for (const transport of transports) {
    const c = client(server.base, { transport, token: mint(-60) });
    const r = record(c);
    c.subscribe("secure");
    c.connect();
    await waitFor(`${transport}: stopped`, () => c.state === "disconnected");
    assert.equal(r.errors[0]?.code, "token_expired", JSON.stringify(r.errors));
    assert.equal(r.disconnected.at(-1).willReconnect, false);
  }
});

test("acks: redelivered after ack_timeout, handled once; a failed handler is retried", async () => {
  const server = await startServer({ args: ["--ack-timeout", "300ms", "--max-redeliveries", "20"] });
  const c = client(server.base, { transport: "websocket" });
  const sub = c.subscribe("jobs", { ack: true });
  const calls = new Map();
  let release;
  const slow = new Promise((r) => (release = r));
  let failedOnce = false;
  const errors = [];
  sub.on("error", (e) => errors.push(e));
  sub.on("message", async (m) => {
    calls.set(m.id, (calls.get(m.id) ?? 0) + 1);
    if (m.data.n === 1) await slow; // longer than ack_timeout: redelivered meanwhile
    if (m.data.n === 2 && !failedOnce) {
      failedOnce = true;
      throw new Error("transient failure");
    }
  });
  c.connect();
  await waitFor("subscribed", () => sub.state === "subscribed");
  const published = [];
  for (let n = 1; n <= 5; n++) published.push(await publish(server.base, "jobs", { n }));
  await waitFor("a redelivery of the slow message", async () => (await server.metric("push_redeliveries_total")) >= 4);
  assert.equal(calls.get(published[0].id), 1, "the slow message is not handled twice while running");
  release();
  await waitFor("every message acked", async () => (await server.metric("push_acks_total")) === 5, 20000);
  for (const m of published) {
    assert.equal(calls.get(m.id), m.data.n === 2 ? 2 : 1, `handler calls for n=${m.data.n}`);
  }
  assert.deepEqual(
    errors.map((e) => [e.code, e.id]),
    [["handler_failed", published[1].id]],
  );
  // Acked: no more redeliveries (each would call nothing, but the server
  // would count them); one more ack_timeout period must add none.
  const redeliveries = await server.metric("push_redeliveries_total");
  const marker = await publish(server.base, "jobs", { n: 6 });
  await waitFor("the marker acked", async () => (await server.metric("push_acks_total")) === 6);
  // Absence over a window of three ack_timeouts: polled, fails at once.
  const until = Date.now() + 1000;
  while (Date.now() < until) {
    assert.equal(await server.metric("push_redeliveries_total"), redeliveries, "no redelivery after the acks");
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(calls.get(marker.id), 1);
});

test("auto falls back to SSE when the WebSocket handshake is refused", async () => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  proxy.refuseWebSocket = true;
  const c = client(proxy.base, { transport: "auto" });
  const sub = c.subscribe("news");
  const r = record(c, sub);
  c.connect();
  const connected = await nextEvent(c, "connected");
  assert.equal(connected.transport, "sse");
  assert.ok(proxy.wsRefused >= 1, "the WebSocket was tried first");
  await waitFor("subscribed", () => sub.state === "subscribed");
  const want = [await publish(server.base, "news", { a: 1 }), await publish(server.base, "news", { a: 2 })];
  await waitFor("messages over SSE", () => r.messages.length >= 2);
  assertExactly(r.messages, want, "auto");

  // A WebSocket-only client behind the same proxy stops with the refusal.
  const ws = client(proxy.base, { transport: "websocket" });
  const wr = record(ws);
  ws.connect();
  await waitFor("websocket-only stops", () => ws.state === "disconnected");
  assert.equal(wr.disconnected.at(-1).status, 403);
});
