// The built ESM bundle (dist/index.mjs) in headless Chromium: a page on
// another origin (the server's allowed_origins names it) receives over
// WebSocket and SSE, and resumes with no gap and no duplicate after the
// push-server under it restarts (Redis broker; a second node takes the
// publishes while the first is down).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { cleanupAll, onCleanup, packageDir, publish, startRedis, startServer, waitFor } from "./helpers.mjs";

after(cleanupAll);

const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const bundle = path.join(packageDir, "dist/index.mjs");

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>@push-dev/client test</title></head><body>
<script type="module">
  import { PushClient } from "/push-client.mjs";
  const server = new URLSearchParams(location.search).get("server");
  const state = (window.state = {});
  for (const transport of ["websocket", "sse"]) {
    const s = (state[transport] = { messages: [], gaps: [], connected: [], states: [], subscribed: [], errors: [] });
    const client = new PushClient(server, { transport, minReconnectDelayMs: 100, maxReconnectDelayMs: 1000 });
    client.on("state", (v) => s.states.push(v));
    client.on("connected", (e) => s.connected.push(e.transport));
    client.on("error", (e) => s.errors.push(e.code));
    const sub = client.subscribe("news");
    sub.on("message", (m) => s.messages.push(m));
    sub.on("gap", (g) => s.gaps.push(g));
    sub.on("subscribed", (e) => s.subscribed.push(e));
    client.connect();
  }
</script></body></html>`;

async function startStatic() {
  const srv = http.createServer((req, res) => {
    const name = new URL(req.url, "http://x").pathname;
    if (name === "/index.html") res.writeHead(200, { "content-type": "text/html" }).end(page);
    else if (name === "/push-client.mjs") res.writeHead(200, { "content-type": "text/javascript" }).end(readFileSync(bundle));
    else res.writeHead(404).end();
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  onCleanup(() => new Promise((r) => srv.close(r)));
  return `http://127.0.0.1:${srv.address().port}`;
}

test("the ESM bundle in Chromium receives from another origin and resumes after a server restart", async () => {
  assert.ok(existsSync(bundle), "run `npm run build` first");
  const origin = await startStatic();
  const redis = await startRedis();
  const args = ["--redis-url", redis.url, "--allowed-origins", origin, "--history-size", "1000"];
  const a = await startServer({ args });
  const b = await startServer({ args });

  const userDataDir = mkdtempSync(path.join(os.tmpdir(), "push-client-chromium-"));
  onCleanup(() => rmSync(userDataDir, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  onCleanup(() => context.close());
  const tab = await context.newPage();
  const pageErrors = [];
  tab.on("pageerror", (e) => pageErrors.push(String(e)));
  await tab.goto(`${origin}/index.html?server=${encodeURIComponent(a.base)}`);
  const state = () => tab.evaluate(() => window.state);
  const both = async (what, pred, timeoutMs) =>
    waitFor(what, async () => {
      const s = await state();
      return s?.websocket && s?.sse && pred(s.websocket) && pred(s.sse);
    }, timeoutMs).catch(async (e) => {
      throw new Error(`${e.message}: ${JSON.stringify(await state())}\n${a.log}`);
    });

  await both("subscribed", (s) => s.subscribed.length === 1);
  const published = [];
  for (let i = 1; i <= 3; i++) published.push(await publish(a.base, "news", { i, phase: "live" }));
  await both("live messages", (s) => s.messages.length === 3);

  // The node the page uses goes away; the other node takes the publishes.
  await a.kill("SIGKILL");
  await both("the page notices", (s) => s.states.at(-1) === "connecting");
  for (let i = 4; i <= 6; i++) published.push(await publish(b.base, "news", { i, phase: "while down" }));
  await a.start();
  await both("reconnected", (s) => s.connected.length === 2 && s.subscribed.length === 2, 30000);
  for (let i = 7; i <= 8; i++) published.push(await publish(a.base, "news", { i, phase: "after restart" }));
  await both("every message", (s) => s.messages.length >= published.length);

  const s = await state();
  const want = published.map(({ channel, id, data }) => ({ channel, id, data }));
  for (const transport of ["websocket", "sse"]) {
    assert.deepEqual(s[transport].messages, want, `${transport}: every message once, in order`);
    assert.deepEqual(s[transport].gaps, [], `${transport}: no gap`);
    assert.equal(s[transport].subscribed[1].recovered, true);
    assert.deepEqual(s[transport].connected, [transport, transport]);
  }
  assert.deepEqual(pageErrors, []);
});
