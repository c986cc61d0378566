// Summarises one run of the conformance suite's server scenarios (called by run.sh).
//
//   node summarize.mjs RESULTS_DIR SUITE_LOG ALL_SCENARIOS_FILE SECONDS
//
// RESULTS_DIR holds the suite's `server-<scenario>-<timestamp>/checks.json`
// (written by `conformance server -o RESULTS_DIR`); SUITE_LOG is the suite's
// stdout, which names the scenarios it ran ("=== Running scenario: X ===") and
// how many it meant to run; ALL_SCENARIOS_FILE lists every server scenario, one
// a line. A scenario passes when it has results and none of its checks is a
// FAILURE (WARNINGs are reported, as the suite does, but do not fail it), and
// when the stricter fixture checks below hold. Prints one line per scenario, the
// reasons of each failure, and a last line
//
//   conformance: P passed, F failed, S skipped (not run) of N scenarios run in T s
//
// Exits 0 only if every scenario run passed and the suite ran all it announced.

import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const [resultsDir, suiteLog, allFile, seconds] = process.argv.slice(2);
const log = readFileSync(suiteLog, 'utf8');
const allScenarios = readFileSync(allFile, 'utf8').split('\n').map((s) => s.trim()).filter(Boolean);
const ran = [...log.matchAll(/^=== Running scenario: (\S+) ===$/gm)].map((m) => m[1]);
const announced = /^Running (\w+) suite \((\d+) scenarios\)/m.exec(log);
const suite = announced ? announced[1] : 'single';
const announcedCount = announced ? Number(announced[2]) : ran.length;

// Two scenarios also accept an isError "unknown tool" answer; these checks make
// sure the fixture really implements the tool the scenario names.
const strict = {
  'tools-call-simple-text': (checks) => {
    const result = checks.find((c) => c.id === 'tools-call-simple-text')?.details?.result;
    const text = result?.content?.find((c) => c.type === 'text')?.text;
    if (result?.isError) return `the tool answered isError: ${JSON.stringify(result.content)}`;
    if (text !== 'This is a simple text response for testing.') return `unexpected text ${JSON.stringify(text)}`;
  },
  'tools-call-error': (checks) => {
    const result = checks.find((c) => c.id === 'tools-call-error')?.details?.result;
    const text = result?.content?.[0]?.text;
    if (text !== 'This tool intentionally returns an error for testing') {
      return `the error is not the tool's own: ${JSON.stringify(text)}`;
    }
  },
};

function resultsOf(scenario) {
  // Directory names are `server-<scenario>-<ISO timestamp with : and . as ->`.
  const pattern = new RegExp(`^server-${scenario.replace(/[^\w-]/g, '\\$&')}-\\d{4}-\\d\\d-\\d\\dT`);
  const dirs = existsSync(resultsDir) ? readdirSync(resultsDir).filter((d) => pattern.test(d)).sort() : [];
  if (dirs.length === 0) return null;
  const file = join(resultsDir, dirs[dirs.length - 1], 'checks.json');
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : null;
}

let passed = 0;
let failed = 0;
const lines = [];
for (const scenario of ran) {
  const checks = resultsOf(scenario);
  const reasons = [];
  let warnings = [];
  let successes = 0;
  if (checks === null) {
    reasons.push('no results (the scenario crashed or was not run)');
  } else {
    for (const c of checks) {
      if (c.status === 'FAILURE') reasons.push(`${c.name}: ${c.errorMessage || c.description}`);
      if (c.status === 'WARNING') warnings.push(`${c.name}: ${c.errorMessage || c.description}`);
      if (c.status === 'SUCCESS') successes += 1;
    }
    if (checks.length === 0) reasons.push('the scenario produced no checks');
    const extra = reasons.length === 0 && strict[scenario]?.(checks);
    if (extra) reasons.push(`fixture check: ${extra}`);
  }
  const ok = reasons.length === 0;
  if (ok) passed += 1;
  else failed += 1;
  const note = warnings.length ? `, ${warnings.length} warning(s)` : '';
  lines.push(`${ok ? 'PASS' : 'FAIL'} ${scenario} (${successes} check(s) passed${note})`);
  for (const r of reasons) lines.push(`       - ${r}`);
  for (const w of warnings) lines.push(`       ~ warning: ${w}`);
}

const notRun = allScenarios.filter((s) => !ran.includes(s));
const incomplete = ran.length !== announcedCount;
console.log(lines.join('\n'));
if (notRun.length) {
  const why = incomplete
    ? 'the suite stopped early'
    : suite === 'active'
      ? 'the suite marks them pending'
      : `not in the ${suite} suite`;
  console.log(`not run, ${why}: ${notRun.join(', ')}`);
}
if (incomplete) {
  console.log(`ERROR: the ${suite} suite announced ${announcedCount} scenarios but ran ${ran.length}`);
}
console.log(
  `conformance: ${passed} passed, ${failed} failed, ${notRun.length} skipped (not run) ` +
    `of ${ran.length} scenarios run in ${seconds} s`,
);
process.exit(failed === 0 && !incomplete && ran.length > 0 ? 0 : 1);
