// Summarises one run of the conformance suite's 2026-07-28 server scenarios (called by
// run-2026.sh).
//
//   node summarize-2026.mjs RESULTS_DIR SUITE_LOG REQUIRED_FILE NOT_SCORED_FILE SECONDS SUITE_VERSION MODE
//
// RESULTS_DIR holds the suite's `server-<scenario>-<timestamp>/checks.json` (written
// by `conformance server -o RESULTS_DIR`); SUITE_LOG is the suite's stdout, which names
// the scenarios it ran ("=== Running scenario: X ===") and, for a requirements run,
// how many it meant to run; REQUIRED_FILE and NOT_SCORED_FILE list the server
// scenarios the revision requires and the ones the suite runs but never scores, one a
// line; MODE is `requirements` (the whole frozen set) or `selected` (--scenario).
//
// A scenario passes when it has results and none of its checks is a FAILURE
// (WARNINGs and SKIPPED checks are shown, as the suite does, but do not fail it), and
// when the stricter fixture checks below hold. Unscored scenarios are reported on one
// line each and never counted. Prints one line per scenario, the reasons of each
// failure, then
//
//   failed: NAME, NAME...                (only when some failed)
//   conformance-json: {...}              (one line: the same, machine-readable)
//   conformance: P passed, F failed, S skipped (not run) of N scenarios run in T s
//
// where "skipped" counts the required scenarios that were not run. Exits 0 only if
// every counted scenario passed and the suite ran all it announced.

import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const [resultsDir, suiteLog, requiredFile, notScoredFile, seconds, suiteVersion, mode] = process.argv.slice(2);
const lines = (file) => readFileSync(file, 'utf8').split('\n').map((s) => s.trim()).filter(Boolean);
const log = readFileSync(suiteLog, 'utf8');
const required = lines(requiredFile);
const notScored = new Set(lines(notScoredFile));
const ran = [...new Set([...log.matchAll(/^=== Running scenario: (\S+) ===$/gm)].map((m) => m[1]))];
const announced = /^Running requirements (\S+) \((\d+) scenarios\)/m.exec(log);
const announcedCount = announced ? Number(announced[2]) : ran.length;

const textOf = (result) => result?.content?.find((c) => c.type === 'text')?.text;

// Scenarios that would also pass on an answer that does not come from the fixture
// they name (an isError "unknown tool", a complete result that ignored the state);
// these make sure the fixture really ran.
const strict = {
  'tools-call-simple-text': (checks) => {
    const result = checks.find((c) => c.id === 'tools-call-simple-text')?.details?.result;
    if (result?.isError) return `the tool answered isError: ${JSON.stringify(result.content)}`;
    const text = textOf(result);
    if (text !== 'This is a simple text response for testing.') return `unexpected text ${JSON.stringify(text)}`;
  },
  'tools-call-error': (checks) => {
    const result = checks.find((c) => c.id === 'tools-call-error')?.details?.result;
    const text = result?.content?.[0]?.text;
    if (text !== 'This tool intentionally returns an error for testing') {
      return `the error is not the tool's own: ${JSON.stringify(text)}`;
    }
  },
  'input-required-result-request-state': (checks) => {
    const result = checks.find((c) => c.id === 'sep-2322-request-state-complete')?.details?.result;
    const text = textOf(result);
    if (!text?.includes('state-ok')) return `the final result does not say "state-ok": ${JSON.stringify(text)}`;
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

function judge(scenario) {
  const checks = resultsOf(scenario);
  const reasons = [];
  const warnings = [];
  const skipped = [];
  let successes = 0;
  if (checks === null) {
    reasons.push('no results (the scenario crashed, was not applicable, or was not run)');
  } else {
    for (const c of checks) {
      const what = `${c.id || c.name}: ${c.errorMessage || c.description}`;
      if (c.status === 'FAILURE') reasons.push(what);
      if (c.status === 'WARNING') warnings.push(what);
      if (c.status === 'SKIPPED') skipped.push(what);
      if (c.status === 'SUCCESS') successes += 1;
    }
    if (checks.length === 0) reasons.push('the scenario produced no checks');
    const extra = reasons.length === 0 && strict[scenario]?.(checks);
    if (extra) reasons.push(`fixture check: ${extra}`);
  }
  return { ok: reasons.length === 0, reasons, warnings, skipped, successes };
}

const passed = [];
const failed = [];
const unscored = { passed: [], failed: [] };
const out = [];
for (const scenario of ran) {
  const v = judge(scenario);
  if (notScored.has(scenario)) {
    (v.ok ? unscored.passed : unscored.failed).push(scenario);
    continue;
  }
  (v.ok ? passed : failed).push(scenario);
  const notes = [
    v.warnings.length ? `${v.warnings.length} warning(s)` : '',
    v.skipped.length ? `${v.skipped.length} check(s) skipped` : '',
  ].filter(Boolean);
  const counted = required.includes(scenario) ? '' : ' [not in the required set]';
  out.push(`${v.ok ? 'PASS' : 'FAIL'} ${scenario} (${v.successes} check(s) passed${notes.map((n) => `, ${n}`).join('')})${counted}`);
  for (const r of v.reasons) out.push(`       - ${r}`);
  for (const w of v.warnings) out.push(`       ~ warning: ${w}`);
  for (const s of v.skipped) out.push(`       ~ skipped: ${s}`);
}

const notRun = required.filter((s) => !ran.includes(s));
const incomplete = ran.length !== announcedCount;
console.log(out.join('\n'));
if (unscored.passed.length + unscored.failed.length) {
  console.log(
    `unscored (run by the suite for visibility, never counted): ` +
      [...unscored.passed.map((s) => `${s} passed`), ...unscored.failed.map((s) => `${s} failed`)].join(', '),
  );
}
if (notRun.length) {
  const why = incomplete ? 'the suite stopped early' : mode === 'selected' ? 'not selected' : 'not run by the suite';
  console.log(`required but not run (${why}): ${notRun.join(', ')}`);
}
if (incomplete) {
  console.log(`ERROR: the suite announced ${announcedCount} scenarios but ran ${ran.length}`);
}
if (failed.length) console.log(`failed: ${failed.join(', ')}`);
const summary = {
  suite: suiteVersion,
  revision: '2026-07-28',
  mode,
  passed,
  failed,
  skipped: notRun,
  unscored,
  incomplete,
  seconds: Number(seconds),
};
console.log(`conformance-json: ${JSON.stringify(summary)}`);
console.log(
  `conformance: ${passed.length} passed, ${failed.length} failed, ${notRun.length} skipped (not run) ` +
    `of ${passed.length + failed.length} scenarios run in ${seconds} s`,
);
process.exit(failed.length === 0 && !incomplete && passed.length > 0 ? 0 : 1);
