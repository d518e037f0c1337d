// Headless Chromium runs docs/examples/js/index.html (built on the
// @push-dev/client library, clients/js) against a real push-server and
// checks that both transports receive every published message, in order,
// with no duplicate, also across forced reconnects: a TCP proxy between
// browser and server cuts every connection and then refuses new ones
// (first by closing them, then with HTTP 503 as a draining node does)
// while more messages are published.
//
// Run: make test-browser (builds push-server and the library, installs
// chromium and playwright-core when missing), or `npm test` here with
// PUSH_SERVER_BIN set (the library is built here when dist/ is missing).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const exampleDir = path.resolve(here, "..");
const root = path.resolve(exampleDir, "../../..");
const serverBin =
  process.env.PUSH_SERVER_BIN ??
  path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, "target"), "debug/push-server");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const libraryDir = path.join(root, "clients/js");
const bundle = path.join(libraryDir, "dist/index.mjs");

// The page loads the library's built ESM bundle.
function ensureBundle() {
  if (existsSync(bundle)) return;
  if (!existsSync(path.join(libraryDir, "node_modules/esbuild"))) {
    execFileSync("npm", ["ci", "--no-audit", "--no-fund", "--silent"], { cwd: libraryDir, stdio: "inherit" });
  }
  execFileSync("npm", ["run", "build"], { cwd: libraryDir, stdio: "inherit" });
}

const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(what, fn, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startServer() {
  const port = await freePort();
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("PUSH_")) delete env[k];
  const child = spawn(serverBin, ["--listen", `127.0.0.1:${port}`], { env, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  cleanups.push(async () => {
    child.kill("SIGKILL");
  });
  const base = `http://127.0.0.1:${port}`;
  await waitFor("push-server /healthz", async () => {
    if (child.exitCode !== null) throw new Error(`push-server exited: ${log}`);
    try {
      return (await fetch(`${base}/healthz`)).ok;
    } catch {
      return false;
    }
  });
  return { base, port, log: () => log };
}

// Serves the example page and the library bundle, laid out as in the
// repository, from their own origin (so CORS and the WebSocket Origin check
// are exercised as in a real deployment).
async function startStatic() {
  const files = {
    "/docs/examples/js/index.html": [path.join(exampleDir, "index.html"), "text/html"],
    "/clients/js/dist/index.mjs": [bundle, "text/javascript"],
  };
  const srv = http.createServer((req, res) => {
    const file = files[new URL(req.url, "http://x").pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file[1] });
    res.end(readFileSync(file[0]));
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  cleanups.push(() => new Promise((r) => srv.close(r)));
  return `http://127.0.0.1:${srv.address().port}`;
}

// TCP proxy browser -> push-server that can cut every connection and refuse
// new ones: a network failure as the browser sees it.
async function startProxy(targetPort) {
  const sockets = new Set();
  const proxy = { down: false };
  const srv = net.createServer((client) => {
    if (proxy.down === "503") {
      // What a draining node answers: an HTTP error, after which a browser's
      // EventSource gives up for good (the example then reopens it itself).
      client.on("error", () => {});
      client.once("data", () =>
        client.end(
          "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nAccess-Control-Allow-Origin: *\r\n" +
            "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        ),
      );
      return;
    }
    if (proxy.down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  proxy.port = srv.address().port;
  proxy.cut = () => {
    for (const s of sockets) s.destroy();
  };
  cleanups.push(() => {
    proxy.cut();
    return new Promise((r) => srv.close(r));
  });
  return proxy;
}

async function publish(base, channel, data) {
  const res = await fetch(`${base}/api/v1/channels/${channel}/messages`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(data),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `publish to ${channel}: ${text}`);
  const body = JSON.parse(text);
  return { channel, id: body.id, data };
}

test("browser example receives over WebSocket and SSE, and resumes after a forced reconnect", async () => {
  ensureBundle();
  const server = await startServer();
  const origin = await startStatic();
  const proxy = await startProxy(server.port);

  const userDataDir = mkdtempSync(path.join(os.tmpdir(), "push-chromium-"));
  cleanups.push(() => rmSync(userDataDir, { recursive: true, force: true }));
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
  cleanups.push(() => context.close());
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  const channels = ["news", "sports"];
  const serverUrl = `http://127.0.0.1:${proxy.port}`;
  await page.goto(`${origin}/docs/examples/js/index.html?server=${encodeURIComponent(serverUrl)}&channels=${channels.join(",")}`);

  const state = () => page.evaluate(() => ({
    ws: window.pushExample.ws,
    sse: window.pushExample.sse,
    resets: window.pushExample.resets,
    subscribed: window.pushExample.subscribed,
    status: window.pushExample.status,
    refused: window.pushExample.refused,
  }));
  await waitFor("both transports open and subscribed", async () => {
    const s = await state();
    return s.status.ws === "connected" && s.subscribed.length === 2 && s.status.sse === "connected";
  });
  // The SSE subscription is made before the response starts; a short pause
  // covers the event loop between the `open` event and our first publish.
  await new Promise((r) => setTimeout(r, 200));

  const published = [];
  for (let i = 1; i <= 5; i++) {
    published.push(await publish(server.base, channels[i % 2], { n: i, phase: "live" }));
  }
  const expectAll = async (what) => {
    const want = (list) => JSON.stringify(list.map(({ channel, id, data }) => ({ channel, id, data })));
    const perChannel = (list) => channels.map((c) => list.filter((m) => m.channel === c));
    await waitFor(what, async () => {
      const s = await state();
      return s.ws.length >= published.length && s.sse.length >= published.length;
    }).catch(async (e) => {
      throw new Error(`${e.message}: page has ${JSON.stringify(await state())}; server log:\n${server.log()}`);
    });
    const s = await state();
    for (const transport of ["ws", "sse"]) {
      // Order is guaranteed per channel; across channels it may interleave.
      assert.deepEqual(
        perChannel(s[transport]).map(want),
        perChannel(published).map(want),
        `${transport}: ${what}`,
      );
      assert.equal(s[transport].length, published.length, `${transport}: no duplicate (${what})`);
    }
    assert.deepEqual(s.resets, []);
  };
  await expectAll("the live messages");

  // Forced reconnect: cut every connection, keep the "network" down while
  // more messages are published, then bring it back.
  proxy.down = true;
  proxy.cut();
  await waitFor("both transports to notice the cut", async () => {
    const s = await state();
    return s.status.ws !== "connected" && s.status.sse !== "connected";
  });
  for (let i = 6; i <= 9; i++) {
    published.push(await publish(server.base, channels[i % 2], { n: i, phase: "while disconnected" }));
  }
  await new Promise((r) => setTimeout(r, 500));
  proxy.down = false;
  await expectAll("every message published while disconnected, after the reconnect");

  // And live again on the new connections.
  for (let i = 10; i <= 11; i++) {
    published.push(await publish(server.base, channels[i % 2], { n: i, phase: "after reconnect" }));
  }
  await expectAll("live messages after the reconnect");

  // Cut again, but now every reconnect attempt gets `503` (a draining node):
  // an EventSource would stop retrying on an HTTP error; the library sees
  // the status and retries with backoff, resuming with its cursor as
  // `lastEventId`.
  proxy.down = "503";
  proxy.cut();
  await waitFor("the SSE client to be refused with 503", async () =>
    (await state()).refused.some((r) => r.transport === "sse" && r.status === 503),
  );
  for (let i = 12; i <= 14; i++) {
    published.push(await publish(server.base, channels[i % 2], { n: i, phase: "while refused with 503" }));
  }
  proxy.down = false;
  await expectAll("every message published while reconnects got 503");
  assert.deepEqual(pageErrors, []);
});
