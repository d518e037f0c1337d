// Builds dist/: one ESM bundle (dist/index.mjs, also what browsers load),
// one CommonJS bundle (dist/index.cjs) and the type declarations
// (dist/types). `ws` stays external: it is imported only in a runtime
// without a global WebSocket (Node 20).
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
rmSync("dist", { recursive: true, force: true });
const common = {
  entryPoints: ["src/index.ts"],
  bundle: true,
  platform: "neutral",
  target: "es2022",
  external: ["ws"],
  sourcemap: true,
  legalComments: "none",
  logLevel: "warning",
};
await build({ ...common, format: "esm", outfile: "dist/index.mjs" });
await build({ ...common, format: "cjs", outfile: "dist/index.cjs" });
// Type-checks the whole source (strict) and writes the declarations.
execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", "tsconfig.json"], { stdio: "inherit" });
