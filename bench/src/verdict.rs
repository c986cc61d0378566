//! The design's targets (the original design's list, the 50-session target
//! and the 1 MiB memory bound), and the CPU-per-request targets, checked
//! against the measurements and printed on stderr. A measurement the rest of
//! the machine disturbed (more than [`QUIET_PCT`] of its CPU) gets no verdict.

use crate::report::{Measured, Target};
use crate::run::Scenario;

type Results = [(Scenario, Vec<(Target, Measured)>)];

fn find<'a>(results: &'a Results, scenario: &str, target: Target) -> Option<&'a Measured> {
    results
        .iter()
        .find(|(s, _)| s.name == scenario)?
        .1
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, m)| m)
}

/// Above this share of the machine's CPU used by other processes during a
/// measurement, it says nothing about a target.
pub const QUIET_PCT: f64 = 5.0;

fn say(what: &str, holds: Option<bool>, detail: String) {
    let verdict = match holds {
        Some(true) => "HOLDS",
        Some(false) => "FAILS",
        None => "not measured",
    };
    eprintln!("  [{verdict:^12}] {what}: {detail}");
}

/// The most CPU other processes took during any of `measured`, if it is
/// above [`QUIET_PCT`].
fn disturbance(measured: &[Option<&Measured>]) -> Option<f64> {
    measured
        .iter()
        .flatten()
        .filter_map(|m| m.other_load_pct)
        .filter(|pct| *pct > QUIET_PCT)
        .reduce(f64::max)
}

/// `say`, unless a measurement behind the verdict was disturbed: then it
/// says so instead of judging.
fn judge(what: &str, measured: &[Option<&Measured>], holds: Option<bool>, detail: String) {
    match disturbance(measured) {
        Some(pct) => eprintln!(
            "  [{:^12}] {what}: {detail} (other processes used {pct:.1}% of the machine; above {QUIET_PCT}% no verdict)",
            "DISTURBED"
        ),
        None => say(what, holds, detail),
    }
}

/// CPU time of the server process per measured request, in µs.
fn cpu_per_request(m: Option<&Measured>) -> Option<f64> {
    m.and_then(|m| m.per_request(m.target_cpu_us))
}

/// CPU time of the backends per measured request, in µs.
fn backend_cpu_per_request(m: Option<&Measured>) -> Option<f64> {
    m.and_then(|m| m.per_request(m.backend_cpu_us))
}

fn ms(d: Option<std::time::Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Prints each target with its verdict.
pub fn print(results: &Results) {
    eprintln!("design targets (2-core machine):");
    let gw = |s| find(results, s, Target::Gateway);
    let ceil = |s| find(results, s, Target::HttpCeiling);
    let floor = |s| find(results, s, Target::StdioFloor);

    // 1. Throughput at 16 in flight.
    match (
        gw("1x16").and_then(Measured::rps),
        ceil("1x16").and_then(Measured::rps),
    ) {
        (Some(g), Some(c)) => judge(
            "at 16 in flight the gateway reaches >= 60% of the HTTP ceiling",
            &[gw("1x16"), ceil("1x16")],
            Some(g / c >= 0.6),
            format!("{g:.0} rps vs {c:.0} rps = {:.1}%", 100.0 * g / c),
        ),
        _ => say(
            "at 16 in flight, >= 60% of the ceiling",
            None,
            String::new(),
        ),
    }

    // 1b. Throughput at 50 sessions with 50 in flight (issue 7).
    match (
        gw("50x50").and_then(Measured::rps),
        ceil("50x50").and_then(Measured::rps),
    ) {
        (Some(g), Some(c)) => judge(
            "at 50 sessions with 50 in flight the gateway reaches >= 50% of the HTTP ceiling",
            &[gw("50x50"), ceil("50x50")],
            Some(g / c >= 0.5),
            format!("{g:.0} rps vs {c:.0} rps = {:.1}%", 100.0 * g / c),
        ),
        _ => say(
            "at 50 sessions with 50 in flight, >= 50% of the ceiling",
            None,
            String::new(),
        ),
    }

    // 2. Latency at 1 in flight.
    let p50 = |m: Option<&Measured>| m.and_then(|m| m.percentile_ms(50.0));
    match (p50(gw("1x1")), p50(ceil("1x1"))) {
        (Some(g), Some(c)) => {
            let own = p50(floor("1x1"))
                .map(|f| {
                    format!(
                        "; beyond the backend's own time (floor p50 {f:.3} ms) the gateway adds {:.3} ms over the ceiling",
                        g - f - c
                    )
                })
                .unwrap_or_default();
            judge(
                "at 1 in flight the gateway's p50 is within 0.1 ms of the ceiling's",
                &[gw("1x1"), ceil("1x1")],
                Some(g - c <= 0.1),
                format!("p50 {g:.3} ms vs {c:.3} ms (+{:.3} ms){own}", g - c),
            );
            judge(
                "at 1 in flight the gateway's p50 is within 0.03 ms of the ceiling's (CPU target)",
                &[gw("1x1"), ceil("1x1")],
                Some(g - c <= 0.03),
                format!("+{:.3} ms", g - c),
            );
        }
        _ => say(
            "at 1 in flight, p50 within 0.1 ms of the ceiling",
            None,
            String::new(),
        ),
    }

    // CPU per request, steadier than rps when the machine is shared.
    let (g16, c16) = (gw("1x16"), ceil("1x16"));
    match (
        cpu_per_request(g16),
        cpu_per_request(c16),
        g16.and_then(Measured::rps),
        c16.and_then(Measured::rps),
    ) {
        (Some(g), Some(c), Some(gr), Some(cr)) => judge(
            "1x16: the gateway's CPU per request is <= 1.5x the ceiling's and it reaches >= 70% of the ceiling's rps",
            &[g16, c16],
            Some(g <= 1.5 * c && gr / cr >= 0.7),
            format!(
                "{g:.1} vs {c:.1} CPU µs/request = {:.2}x; {:.1}% of the ceiling's rps",
                g / c,
                100.0 * gr / cr
            ),
        ),
        _ => say("1x16 CPU per request", None, String::new()),
    }
    let (g50, c50) = (gw("50x50"), ceil("50x50"));
    match (
        cpu_per_request(g50),
        cpu_per_request(c50),
        backend_cpu_per_request(g50),
        g50.and_then(Measured::rps),
        c50.and_then(Measured::rps),
    ) {
        (Some(g), Some(c), Some(b), Some(gr), Some(cr)) => judge(
            "50x50: the gateway reaches >= 55% of the ceiling's rps and its backends use <= 6 CPU µs/request",
            &[g50, c50],
            Some(gr / cr >= 0.55 && b <= 6.0),
            format!(
                "{:.1}% of the ceiling's rps; backends {b:.1} CPU µs/request; gateway {g:.1} vs ceiling {c:.1} CPU µs/request",
                100.0 * gr / cr
            ),
        ),
        _ => say("50x50 CPU per request", None, String::new()),
    }

    // 3 and 4. A thousand sessions.
    let thousand = results
        .iter()
        .find(|(s, _)| s.name == "1000-sessions")
        .map(|(s, _)| s.sessions);
    match (gw("1000-sessions"), thousand) {
        (Some(m), Some(n)) => {
            let per = m
                .rss_idle_kib
                .zip(m.rss_after_setup_kib)
                .map(|(idle, after)| (after as f64 - idle as f64) / n as f64);
            say(
                "gateway RSS grows by < 100 KiB per idle session",
                per.map(|p| p < 100.0),
                format!(
                    "{:.1} KiB per session ({n} sessions: {} -> {} KiB)",
                    per.unwrap_or(f64::NAN),
                    m.rss_idle_kib.unwrap_or(0),
                    m.rss_after_setup_kib.unwrap_or(0)
                ),
            );
            say(
                &format!("{n} concurrent sessions work"),
                Some(m.errors == 0 && m.setup_errors == 0 && m.latencies_ns.len() == n),
                format!(
                    "{} of {n} calls answered, {} errors, {} setup errors; opened at once in {:.0} ms",
                    m.latencies_ns.len(),
                    m.errors,
                    m.setup_errors,
                    ms(m.setup_parallel)
                ),
            );
        }
        _ => say("1,000 concurrent sessions", None, String::new()),
    }

    // 5. Sessions started at once: "well under n times one", taken as at most
    //    75% of the time the same n sessions take one by one. On 2 cores,
    //    where starting processes is CPU-bound, twice as fast is the most that
    //    parallel spawns can give; the floor's own ratio is printed beside it.
    let hundred = results
        .iter()
        .find(|(s, _)| s.name == "setup-100")
        .map(|(s, _)| s.sessions);
    match (gw("setup-100"), hundred) {
        (Some(m), Some(n)) => {
            let (at_once, one, serial) =
                (ms(m.setup_parallel), ms(m.setup_one), ms(m.setup_serial));
            let floor_ratio =
                floor("setup-100").map_or(f64::NAN, |f| ms(f.setup_parallel) / ms(f.setup_serial));
            say(
                &format!("{n} sessions started at once take well under {n} times one"),
                Some(at_once <= 0.75 * serial),
                format!(
                    "at once {at_once:.1} ms = {:.1}x one session ({one:.2} ms) = {:.0}% of one by one ({serial:.1} ms; target <= 75%); the floor's processes at once take {:.0}% of one by one",
                    at_once / one,
                    100.0 * at_once / serial,
                    100.0 * floor_ratio
                ),
            );
        }
        _ => say("100 sessions started at once", None, String::new()),
    }

    // 6. Memory per 1 MiB result: "about 3 copies", taken as at most 3.5.
    for (name, in_flight) in [("big-1MiB", 1u64), ("big-1MiB-x4", 4)] {
        match gw(name).and_then(|m| m.rss_peak_growth_kib) {
            Some(growth) => say(
                &format!(
                    "{name}: peak gateway memory growth is about 3 copies (<= 3.5 MiB) of the 1 MiB result per request in flight ({in_flight})"
                ),
                Some(growth * 2 <= 7 * 1024 * in_flight),
                format!(
                    "{growth} KiB = {:.2} MiB per request in flight",
                    growth as f64 / 1024.0 / in_flight as f64
                ),
            ),
            None => say(name, None, String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(pct: Option<f64>) -> Measured {
        Measured {
            other_load_pct: pct,
            ..Measured::default()
        }
    }

    #[test]
    fn a_measurement_with_others_above_five_percent_gets_no_verdict() {
        let (quiet, busy, unknown) = (loaded(Some(2.0)), loaded(Some(12.5)), loaded(None));
        assert_eq!(disturbance(&[Some(&quiet), Some(&unknown), None]), None);
        assert_eq!(disturbance(&[Some(&quiet), Some(&busy)]), Some(12.5));
        assert_eq!(disturbance(&[Some(&loaded(Some(QUIET_PCT)))]), None);
    }

    #[test]
    fn cpu_per_request_divides_by_the_measured_requests() {
        let m = Measured {
            requests: 4,
            target_cpu_us: Some(100),
            backend_cpu_us: Some(20),
            ..Measured::default()
        };
        assert_eq!(cpu_per_request(Some(&m)), Some(25.0));
        assert_eq!(backend_cpu_per_request(Some(&m)), Some(5.0));
        assert_eq!(cpu_per_request(None), None);
    }
}
