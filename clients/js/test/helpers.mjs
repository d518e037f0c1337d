// What the integration tests share: real push-server and redis-server
// processes on free loopback ports, TCP proxies, HS256 tokens, and
// waiting for a condition with a deadline (never a bare sleep).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const packageDir = path.resolve(here, "..");
export const root = path.resolve(packageDir, "../..");
export const serverBin =
  process.env.PUSH_SERVER_BIN ??
  path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, "target"), "debug/push-server");

const cleanups = [];
/** Runs `fn` at the end of the test file (last registered first). */
export function onCleanup(fn) {
  cleanups.push(fn);
}
export async function cleanupAll() {
  while (cleanups.length) {
    try {
      await cleanups.pop()();
    } catch {
      // best effort
    }
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value; fails after `timeoutMs`. */
export async function waitFor(what, fn, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Resolves with the first emission of `event` on `emitter` (with a deadline). */
export function nextEvent(emitter, event, timeoutMs = 20000, pred = () => true) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${event}`));
    }, timeoutMs);
    const off = emitter.on(event, (v) => {
      if (!pred(v)) return;
      clearTimeout(t);
      off();
      resolve(v);
    });
  });
}

/**
 * A push-server process. `restart()` starts it again on the same port with
 * the same settings; `kill(signal)` resolves when it has exited.
 */
export async function startServer({ args = [], port } = {}) {
  port ??= await freePort();
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" };
  for (const k of Object.keys(env)) if (k.startsWith("PUSH_")) delete env[k];
  const server = { port, base: `http://127.0.0.1:${port}`, log: "", child: null };
  server.start = async () => {
    const child = spawn(serverBin, ["--listen", `127.0.0.1:${port}`, ...args], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    server.child = child;
    child.stdout.on("data", (d) => (server.log += d));
    child.stderr.on("data", (d) => (server.log += d));
    child.exited = new Promise((r) => child.once("exit", r));
    await waitFor(`push-server on ${port}`, async () => {
      if (child.exitCode !== null) throw new Error(`push-server exited (${child.exitCode}): ${server.log}`);
      try {
        return (await fetch(`${server.base}/healthz`)).ok;
      } catch {
        return false;
      }
    });
    return server;
  };
  server.kill = async (signal = "SIGKILL") => {
    const child = server.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await child.exited;
  };
  server.restart = async () => {
    await server.kill();
    return server.start();
  };
  server.metric = async (name) => {
    const text = await (await fetch(`${server.base}/metrics`)).text();
    let total = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) total += Number(line.split(" ").pop());
    }
    return total;
  };
  onCleanup(() => server.kill());
  return server.start();
}

/** A redis-server on a free port, no persistence. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), "push-client-redis-"));
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const exited = new Promise((r) => child.once("exit", r));
  onCleanup(async () => {
    child.kill("SIGKILL");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  });
  await waitFor("redis-server", async () => {
    if (child.exitCode !== null) throw new Error(`redis-server exited: ${log}`);
    return new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.on("connect", () => s.write("PING\r\n"));
      s.on("data", (d) => {
        s.destroy();
        resolve(String(d).startsWith("+PONG"));
      });
      s.on("error", () => resolve(false));
    });
  });
  return { port, url: `redis://127.0.0.1:${port}` };
}

/** Publishes over HTTP (as a backend does) and returns { channel, id, data }. */
export async function publish(base, channel, data, key) {
  const headers = { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(`${base}/api/v1/channels/${channel}/messages`, {
    method: "POST",
    headers,
    body: JSON.stringify(data),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `publish to ${channel}: ${text}`);
  return { channel, id: JSON.parse(text).id, data };
}

/**
 * Publishes `{n}` to every channel every `everyMs` until stop(); resolves
 * stop() with what was published. A publish refused by a node that is
 * restarting is retried (the backend's job), never counted twice.
 */
export function startPublisher(base, channels, { everyMs = 20, key } = {}) {
  const published = [];
  let running = true;
  let n = 0;
  const loop = (async () => {
    while (running) {
      n++;
      for (const channel of channels) {
        const data = { n };
        for (let tries = 0; running || tries === 0; tries++) {
          try {
            published.push(await publish(typeof base === "function" ? base() : base, channel, data, key));
            break;
          } catch {
            if (tries > 500) throw new Error("publisher: the server never came back");
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    published,
    count: () => published.length,
    async stop() {
      running = false;
      await loop;
      return published;
    },
  };
}

/** An HS256 JWT. */
export function hs256(claims, secret) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/**
 * A TCP proxy in front of a server whose target port can change (a load
 * balancer moving off a draining node) and that can refuse WebSocket
 * upgrades (`refuseWebSocket`: answers `GET /ws` with 403, as some proxies do).
 */
export async function startProxy(targetPort) {
  const sockets = new Set();
  const proxy = { target: targetPort, refuseWebSocket: false, wsRefused: 0 };
  const srv = net.createServer((client) => {
    client.on("error", () => {});
    client.once("data", (first) => {
      if (proxy.refuseWebSocket && first.toString("latin1").startsWith("GET /ws")) {
        proxy.wsRefused++;
        client.end(
          "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nforbidden",
        );
        return;
      }
      const upstream = net.connect(proxy.target, "127.0.0.1");
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => {});
      }
      upstream.write(first);
      client.pipe(upstream).pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  proxy.port = srv.address().port;
  proxy.base = `http://127.0.0.1:${proxy.port}`;
  proxy.cut = () => {
    for (const s of sockets) s.destroy();
  };
  onCleanup(() => {
    proxy.cut();
    return new Promise((r) => srv.close(r));
  });
  return proxy;
}

/** Records what a subscription and its client emit. */
export function record(client, sub) {
  const r = { messages: [], gaps: [], subscribed: [], errors: [], states: [], connected: [], disconnected: [] };
  sub?.on("message", (m) => {
    r.messages.push(m);
  });
  sub?.on("gap", (e) => r.gaps.push(e));
  sub?.on("subscribed", (e) => r.subscribed.push(e));
  sub?.on("error", (e) => r.errors.push(e));
  client.on("state", (s) => r.states.push(s));
  client.on("connected", (e) => r.connected.push(e));
  client.on("disconnected", (e) => r.disconnected.push(e));
  client.on("error", (e) => r.errors.push(e));
  return r;
}

/** Asserts that `got` holds exactly `want` (same ids and data, in order, once each). */
export function assertExactly(got, want, what) {
  const ids = got.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, `${what}: a message was delivered twice`);
  assert.deepEqual(
    got.map(({ channel, id, data }) => ({ channel, id, data })),
    want.map(({ channel, id, data }) => ({ channel, id, data })),
    `${what}: every message once, in order`,
  );
}

/** Waits until every client got every published message; on timeout says what is missing. */
export async function waitForAll(what, clients, published, timeoutMs = 30000) {
  try {
    await waitFor(what, () => clients.every((x) => x.r.messages.length >= published.length), timeoutMs);
  } catch (e) {
    const detail = clients.map((x) => {
      const got = new Set(x.r.messages.map((m) => `${m.channel}/${m.id}`));
      const missing = published.filter((m) => !got.has(`${m.channel}/${m.id}`));
      return `${x.transport}: ${x.r.messages.length}/${published.length}, missing ${JSON.stringify(missing.slice(0, 5))}, disconnected ${JSON.stringify(x.r.disconnected)}, gaps ${JSON.stringify(x.r.gaps)}, state ${x.c.state}, errors ${JSON.stringify(x.r.errors)}`;
    });
    throw new Error(`${e.message}\n${detail.join("\n")}`);
  }
}
