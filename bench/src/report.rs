//! What a measurement is, and the JSON line printed for it.

use std::time::Duration;

use serde::Serialize;

/// The three things measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Gateway,
    StdioFloor,
    HttpCeiling,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::StdioFloor, Target::HttpCeiling, Target::Gateway];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Gateway => "gateway",
            Target::StdioFloor => "stdio-floor",
            Target::HttpCeiling => "http-ceiling",
        }
    }

    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// Everything measured for one scenario on one target.
#[derive(Debug, Default)]
pub struct Measured {
    pub sessions: usize,
    pub in_flight: usize,
    pub requests: usize,
    pub errors: usize,
    /// Failures while opening, closing or stopping (not part of `errors`).
    pub setup_errors: usize,
    pub first_error: Option<String>,
    pub wall: Duration,
    /// Latencies of the measured requests that succeeded, in nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    pub setup_parallel: Option<Duration>,
    pub setup_serial: Option<Duration>,
    /// Median time of one session's setup, from the one-by-one openings.
    pub setup_one: Option<Duration>,
    /// The slowest session of the openings at once.
    pub setup_slowest: Option<Duration>,
    pub rss_idle_kib: Option<u64>,
    pub rss_after_setup_kib: Option<u64>,
    pub rss_after_run_kib: Option<u64>,
    /// Peak RSS during the warm-up and the measured run minus the RSS just
    /// before the warm-up (only for scenarios that ask for it).
    pub rss_peak_growth_kib: Option<u64>,
    /// CPU time of the benchmark process (the client) during the measured run.
    pub client_cpu_us: Option<u64>,
    /// CPU time of the server process (gateway or ceiling), its own threads only.
    pub target_cpu_us: Option<u64>,
    /// CPU time of the backend processes (for the gateway: every process
    /// under it, i.e. each session's supervisor and backend).
    pub backend_cpu_us: Option<u64>,
    /// CPU time the rest of the machine (other processes, the hypervisor)
    /// took during the measured run, in percent of all CPUs: interference.
    pub other_load_pct: Option<f64>,
}

impl Measured {
    pub fn note_error(&mut self, error: String) {
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }

    pub fn rps(&self) -> Option<f64> {
        (self.requests > 0 && !self.wall.is_zero())
            .then(|| self.requests as f64 / self.wall.as_secs_f64())
    }

    /// The `p`-th percentile (nearest rank), in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies_ns, p).map(|ns| ns as f64 / 1e6)
    }

    /// `us` of CPU time per measured request.
    pub fn per_request(&self, us: Option<u64>) -> Option<f64> {
        let us = us?;
        (self.requests > 0).then(|| us as f64 / self.requests as f64)
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One printed line: a scenario on a target.
#[derive(Debug, Serialize)]
pub struct Line {
    pub scenario: String,
    pub target: &'static str,
    pub sessions: usize,
    pub in_flight: usize,
    pub requests: usize,
    pub errors: usize,
    pub rps: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub setup_parallel_ms: Option<f64>,
    pub setup_serial_ms: Option<f64>,
    pub rss_idle_kib: Option<u64>,
    pub rss_after_setup_kib: Option<u64>,
    pub rss_after_run_kib: Option<u64>,
    /// Gateway (or ceiling) requests/s divided by the floor's.
    pub ratio_to_floor: Option<f64>,
    /// Gateway (or floor) requests/s divided by the ceiling's.
    pub ratio_to_ceiling: Option<f64>,
    // ---- beyond the fields ----
    pub setup_errors: usize,
    pub setup_one_ms: Option<f64>,
    pub setup_slowest_ms: Option<f64>,
    pub rss_per_session_kib: Option<f64>,
    pub rss_peak_growth_kib: Option<u64>,
    pub client_cpu_us_per_req: Option<f64>,
    pub target_cpu_us_per_req: Option<f64>,
    pub backend_cpu_us_per_req: Option<f64>,
    pub other_load_pct: Option<f64>,
    pub first_error: Option<String>,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| round(d.as_secs_f64() * 1e3, 3))
}

pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

impl Line {
    pub fn new(
        scenario: &str,
        target: Target,
        m: &Measured,
        floor_rps: Option<f64>,
        ceiling_rps: Option<f64>,
    ) -> Line {
        let rps = m.rps();
        let ratio = |base: Option<f64>| match (rps, base) {
            (Some(r), Some(b)) if b > 0.0 => Some(round(r / b, 3)),
            _ => None,
        };
        let per_session = match (m.rss_idle_kib, m.rss_after_setup_kib) {
            (Some(idle), Some(after)) if m.sessions > 0 => {
                Some(round((after as f64 - idle as f64) / m.sessions as f64, 1))
            }
            _ => None,
        };
        let p = |q| m.percentile_ms(q).map(|v| round(v, 3));
        Line {
            scenario: scenario.to_owned(),
            target: target.as_str(),
            sessions: m.sessions,
            in_flight: m.in_flight,
            requests: m.requests,
            errors: m.errors,
            rps: rps.map(|r| round(r, 1)),
            p50_ms: p(50.0),
            p90_ms: p(90.0),
            p99_ms: p(99.0),
            max_ms: p(100.0),
            setup_parallel_ms: ms(m.setup_parallel),
            setup_serial_ms: ms(m.setup_serial),
            rss_idle_kib: m.rss_idle_kib,
            rss_after_setup_kib: m.rss_after_setup_kib,
            rss_after_run_kib: m.rss_after_run_kib,
            ratio_to_floor: if target == Target::StdioFloor {
                None
            } else {
                ratio(floor_rps)
            },
            ratio_to_ceiling: if target == Target::HttpCeiling {
                None
            } else {
                ratio(ceiling_rps)
            },
            setup_errors: m.setup_errors,
            setup_one_ms: ms(m.setup_one),
            setup_slowest_ms: ms(m.setup_slowest),
            rss_per_session_kib: per_session,
            rss_peak_growth_kib: m.rss_peak_growth_kib,
            client_cpu_us_per_req: m.per_request(m.client_cpu_us).map(|v| round(v, 1)),
            target_cpu_us_per_req: m.per_request(m.target_cpu_us).map(|v| round(v, 1)),
            backend_cpu_us_per_req: m.per_request(m.backend_cpu_us).map(|v| round(v, 1)),
            other_load_pct: m.other_load_pct.map(|v| round(v, 1)),
            first_error: m.first_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 1.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
