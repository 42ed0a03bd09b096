// Run the panel checks under MicroPython (WebAssembly) in Node.
// usage: node mp_run.mjs <micropython.mjs> <panel_checks.py> <panel/*.py>...
// Only the panel package is copied in; sipedge/__init__.py is replaced by an empty one.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { pathToFileURL } from "node:url";

const [mpModule, checks, ...panelFiles] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(mpModule).href);
let failed = false;
const mp = await loadMicroPython({
  stdout: (line) => process.stdout.write(line.endsWith("\n") ? line : line + "\n"),
  stderr: (line) => { failed = true; process.stderr.write(line + "\n"); },
});
mp.FS.mkdirTree("/lib/sipedge/panel");
mp.FS.writeFile("/lib/sipedge/__init__.py", "");
for (const f of panelFiles) mp.FS.writeFile("/lib/sipedge/panel/" + basename(f), readFileSync(f));
mp.FS.writeFile("/lib/panel_checks.py", readFileSync(checks));
try {
  mp.runPython([
    "import sys",
    "sys.path.insert(0, '/lib')",
    "print('implementation', sys.implementation.name)",
    "import panel_checks",
    "panel_checks.run_all()",
  ].join("\n"));
} catch (err) {
  failed = true;
  process.stderr.write("MicroPython error: " + err.message + "\n");
}
process.exit(failed ? 1 : 0);
