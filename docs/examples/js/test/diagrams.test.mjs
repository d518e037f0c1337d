// Every ```mermaid diagram in docs/*.md parses and renders to SVG with the
// real Mermaid library in headless Chromium (a diagram with a syntax error
// shows up on GitHub as an error box instead of a picture).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const docs = path.resolve(here, "../../..");
const mermaidJs = createRequire(import.meta.url).resolve("mermaid/dist/mermaid.min.js");

function diagrams() {
  const out = [];
  for (const file of readdirSync(docs).filter((f) => f.endsWith(".md")).sort()) {
    const text = readFileSync(path.join(docs, file), "utf8");
    const re = /^```mermaid\n([\s\S]*?)^```$/gm;
    let m;
    let n = 0;
    while ((m = re.exec(text))) out.push({ name: `${file} #${++n}`, code: m[1] });
  }
  return out;
}

let context;
after(async () => context?.close());

test("every Mermaid diagram in docs/ renders", async () => {
  const list = diagrams();
  assert.ok(list.length >= 3, `expected the diagrams of architecture.md and kubernetes.md, found ${list.length}`);
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), "push-chromium-"));
  after(() => rmSync(userDataDir, { recursive: true, force: true }));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await context.newPage();
  await page.setContent("<!doctype html><html><body></body></html>");
  await page.addScriptTag({ path: mermaidJs });
  await page.evaluate(() => window.mermaid.initialize({ startOnLoad: false }));
  for (const [i, d] of list.entries()) {
    const result = await page.evaluate(async ({ code, id }) => {
      try {
        const { svg } = await window.mermaid.render(id, code);
        return { ok: svg.includes("<svg") };
      } catch (e) {
        return { ok: false, error: String(e?.message ?? e) };
      }
    }, { code: d.code, id: `d${i}` });
    assert.ok(result.ok, `${d.name}: ${result.error}`);
  }
});
