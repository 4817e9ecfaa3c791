//! Prometheus exposition of what the router measured and what the controller did.
//!
//! Nothing here is recorded on the request path: the router keeps atomic counters per
//! revision (`RevisionStats`), and a scrape reads them through a collector built for that
//! scrape. Labels are bounded: app, service, revision, status class and instance state —
//! never a raw path or client address.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use slipway_router::Totals;

/// Bucket bounds of the request duration histogram, in seconds.
pub const DURATION_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters of controller actions, by name and label set.
#[derive(Debug, Default)]
pub struct Counters {
    inner: Mutex<BTreeMap<(&'static str, Labels), u64>>,
}

pub type Labels = Vec<(String, String)>;

impl Counters {
    pub fn inc(&self, name: &'static str, labels: Labels) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.entry((name, labels)).or_default() += 1;
    }

    pub fn get(&self, name: &'static str, labels: &Labels) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.get(&(name, labels.clone())).copied().unwrap_or(0)
    }

    fn snapshot(&self) -> BTreeMap<(&'static str, Labels), u64> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One revision's measurements, as read at scrape time: only what the families show, so
/// that a scrape of 10,000 revisions does not hold 10,000 full histograms (3 KiB each).
#[derive(Debug)]
pub struct RevisionSample {
    pub labels: Labels,
    requests_by_class: [u64; 5],
    errors: u64,
    /// Requests per `DURATION_BOUNDS` bucket and then `+Inf`; not cumulative.
    buckets: [u64; DURATION_BOUNDS.len() + 1],
    latency_count: u64,
    latency_sum: Duration,
    in_flight: u64,
}

impl RevisionSample {
    pub fn new(labels: Labels, totals: &Totals, in_flight: u64) -> RevisionSample {
        let cumulative = totals.cumulative_le(duration_bounds());
        let latency_count = totals.latency_count();
        let mut buckets = [0; DURATION_BOUNDS.len() + 1];
        let mut previous = 0;
        for (bucket, c) in buckets.iter_mut().zip(&cumulative) {
            *bucket = c.saturating_sub(previous);
            previous = *c;
        }
        buckets[DURATION_BOUNDS.len()] = latency_count.saturating_sub(previous);
        RevisionSample {
            labels,
            requests_by_class: totals.requests_by_class,
            errors: totals.errors,
            buckets,
            latency_count,
            latency_sum: totals.latency_sum,
            in_flight,
        }
    }
}

/// `DURATION_BOUNDS` as durations, converted once.
fn duration_bounds() -> &'static [Duration; DURATION_BOUNDS.len()] {
    static BOUNDS: std::sync::LazyLock<[Duration; DURATION_BOUNDS.len()]> =
        std::sync::LazyLock::new(|| DURATION_BOUNDS.map(Duration::from_secs_f64));
    &BOUNDS
}

/// Everything one scrape shows; gathered by the controller, then encoded here.
#[derive(Debug, Default)]
pub struct Scrape {
    pub revisions: Vec<RevisionSample>,
    /// Instances by (app, service, revision, state).
    pub instances: BTreeMap<Labels, u64>,
    /// Per instance (app, service, revision, instance): what its cgroup says it uses, and
    /// its limits.
    pub usage: Vec<(Labels, slipway_runtime::Usage, slipway_runtime::Limits)>,
    pub counters: BTreeMap<(&'static str, Labels), u64>,
    /// Per database (app, database): when its last verified backup was taken.
    pub backups: Vec<(Labels, i64)>,
    /// Per running database (app, database, engine): 1 when its probe passes, else 0.
    pub databases: Vec<(Labels, i64)>,
    /// Per routed host with a certificate from a file or obtained over ACME (app, host).
    pub certificates: Vec<CertificateSample>,
    /// Client connections open on the router's listeners.
    pub client_connections: u64,
}

/// What `/metrics` shows of one host's ACME certificate.
#[derive(Debug)]
pub struct CertificateSample {
    pub labels: Labels,
    /// When the certificate served expires (seconds since the epoch), if there is one.
    pub not_after: Option<i64>,
    /// 1 while attempts to obtain or renew it fail, else 0.
    pub failing: i64,
    /// Failed attempts since the server started.
    pub failures: u64,
}

impl Scrape {
    pub fn with_counters(mut self, counters: &Counters) -> Self {
        self.counters = counters.snapshot();
        self
    }
}

const HELP: &[(&str, &str)] = &[
    (
        "slipway_deploys",
        "Service deploys by outcome (ok, failed, unchanged).",
    ),
    ("slipway_rollbacks", "Rollbacks by outcome (ok, failed)."),
    (
        "slipway_instance_restarts",
        "Instance restarts after a crash or a failed liveness probe.",
    ),
    (
        "slipway_cold_starts",
        "Instances started for a revision that had none running.",
    ),
    (
        "slipway_backup_failures",
        "Database backups that failed or did not verify.",
    ),
];

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut m = encoder.encode_descriptor(
                "slipway_requests",
                "Requests the router sent to a revision, by status class (router-made 502/503/504 included).",
                None,
                MetricType::Counter,
            )?;
            for r in &self.revisions {
                for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().enumerate() {
                    ConstCounter::new(r.requests_by_class[i])
                        .encode(m.encode_family(&(r.labels.as_slice(), [("code", class)]))?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "slipway_request_errors",
                "Requests answered with a 5xx or cut off by an upstream failure.",
                None,
                MetricType::Counter,
            )?;
            for r in &self.revisions {
                ConstCounter::new(r.errors).encode(m.encode_family(&r.labels)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "slipway_request_duration_seconds",
                "Time from routing a request to the end of its response body.",
                None,
                MetricType::Histogram,
            )?;
            for r in &self.revisions {
                let buckets: [(f64, u64); DURATION_BOUNDS.len() + 1] = std::array::from_fn(|i| {
                    (
                        DURATION_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY),
                        r.buckets[i],
                    )
                });
                m.encode_family(&r.labels)?.encode_histogram::<Labels>(
                    r.latency_sum.as_secs_f64(),
                    r.latency_count,
                    &buckets,
                    None,
                )?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "slipway_in_flight_requests",
                "Requests being served by a revision right now.",
                None,
                MetricType::Gauge,
            )?;
            for r in &self.revisions {
                ConstGauge::new(r.in_flight as i64).encode(m.encode_family(&r.labels)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "slipway_instances",
                "Instances by state.",
                None,
                MetricType::Gauge,
            )?;
            for (labels, n) in &self.instances {
                ConstGauge::new(*n as i64).encode(m.encode_family(labels)?)?;
            }
        }
        self.encode_usage(&mut encoder)?;
        if !self.databases.is_empty() {
            let mut m = encoder.encode_descriptor(
                "slipway_database_up",
                "Whether a managed database answers its protocol-level probe (1) or not (0).",
                None,
                MetricType::Gauge,
            )?;
            for (labels, up) in &self.databases {
                ConstGauge::new(*up).encode(m.encode_family(labels)?)?;
            }
        }
        if !self.backups.is_empty() {
            let mut m = encoder.encode_descriptor(
                "slipway_backup_last_success_timestamp_seconds",
                "When the newest verified backup of a database was taken (seconds since the epoch).",
                None,
                MetricType::Gauge,
            )?;
            for (labels, seconds) in &self.backups {
                ConstGauge::new(*seconds).encode(m.encode_family(labels)?)?;
            }
        }
        if !self.certificates.is_empty() {
            {
                let mut m = encoder.encode_descriptor(
                    "slipway_certificate_expiry_timestamp_seconds",
                    "When the certificate served for a host (from a file or obtained over ACME) expires (seconds since the epoch).",
                    None,
                    MetricType::Gauge,
                )?;
                for c in &self.certificates {
                    if let Some(not_after) = c.not_after {
                        ConstGauge::new(not_after).encode(m.encode_family(&c.labels)?)?;
                    }
                }
            }
            {
                let mut m = encoder.encode_descriptor(
                    "slipway_certificate_failing",
                    "Whether obtaining or renewing a host's certificate over ACME fails (1) or not (0).",
                    None,
                    MetricType::Gauge,
                )?;
                for c in &self.certificates {
                    ConstGauge::new(c.failing).encode(m.encode_family(&c.labels)?)?;
                }
            }
            let mut m = encoder.encode_descriptor(
                "slipway_certificate_failures",
                "Failed attempts to obtain or renew a host's certificate over ACME.",
                None,
                MetricType::Counter,
            )?;
            for c in &self.certificates {
                ConstCounter::new(c.failures).encode(m.encode_family(&c.labels)?)?;
            }
        }
        for (name, help) in HELP {
            let rows: Vec<_> = self
                .counters
                .iter()
                .filter(|((n, _), _)| n == name)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for ((_, labels), v) in rows {
                ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
            }
        }
        ConstGauge::new(self.client_connections as i64).encode(encoder.encode_descriptor(
            "slipway_router_client_connections",
            "Client connections open on the router's HTTP and HTTPS listeners.",
            None,
            MetricType::Gauge,
        )?)?;
        let (rss, cpu) = own_resources();
        ConstGauge::new(rss as i64).encode(encoder.encode_descriptor(
            "slipway_process_resident_memory_bytes",
            "Resident memory of the slipway server itself.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(cpu).encode(encoder.encode_descriptor(
            "slipway_process_cpu_seconds",
            "CPU time used by the slipway server itself (user + system).",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

impl Scrape {
    /// The per-instance resource families, each only when some instance has a value.
    fn encode_usage(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        type Get = fn(&slipway_runtime::Usage, &slipway_runtime::Limits) -> Option<u64>;
        let gauges: [(&str, &str, Get); 3] = [
            (
                "slipway_instance_memory_bytes",
                "Memory an instance uses now, from its cgroup.",
                |u, _| Some(u.memory_bytes),
            ),
            (
                "slipway_instance_memory_limit_bytes",
                "The memory limit of an instance (`resources.memory`).",
                |_, l| l.memory_bytes,
            ),
            (
                "slipway_instance_cpu_limit_millicores",
                "The cpu limit of an instance (`resources.cpu`), in millicores.",
                |_, l| l.cpu_millis.map(u64::from),
            ),
        ];
        for (name, help, get) in gauges {
            let rows: Vec<_> = self
                .usage
                .iter()
                .filter_map(|(labels, u, l)| get(u, l).map(|v| (labels, v)))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, v) in rows {
                ConstGauge::new(v as i64).encode(m.encode_family(labels)?)?;
            }
        }
        if !self.usage.is_empty() {
            let mut m = encoder.encode_descriptor(
                "slipway_instance_cpu_seconds",
                "Cpu time an instance has used, from its cgroup.",
                None,
                MetricType::Counter,
            )?;
            for (labels, u, _) in &self.usage {
                ConstCounter::new(u.cpu_nanos as f64 / 1e9).encode(m.encode_family(labels)?)?;
            }
            let mut m = encoder.encode_descriptor(
                "slipway_instance_oom_kills",
                "Processes of an instance the kernel killed for exceeding its memory limit.",
                None,
                MetricType::Counter,
            )?;
            for (labels, u, _) in &self.usage {
                ConstCounter::new(u.oom_kills).encode(m.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// Encodes one scrape in the OpenMetrics text format.
pub fn encode(scrape: Scrape) -> String {
    // Sized up front from what a revision and an instance take (about 2.1 KiB and 0.3 KiB):
    // grown from empty, the text for 10,000 revisions (20 MiB) was copied over and over.
    let estimate = 4096 + 2304 * scrape.revisions.len() + 512 * scrape.usage.len();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::with_capacity(estimate);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// This process's resident memory (bytes) and CPU time (seconds), from /proc.
pub fn own_resources() -> (u64, f64) {
    let page = 4096u64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
            let u: f64 = fields.get(11)?.parse().ok()?;
            let st: f64 = fields.get(12)?.parse().ok()?;
            Some((u + st) / ticks)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let stats = slipway_router::RevisionStats::new();
        for ms in [1u64, 3, 3, 20, 700] {
            stats.record(200, false, Duration::from_millis(ms));
        }
        stats.record(503, true, Duration::from_millis(2));
        let scrape = Scrape {
            revisions: vec![RevisionSample::new(
                vec![("service".into(), "api".into())],
                &stats.totals(),
                0,
            )],
            ..Default::default()
        };
        let text = encode(scrape);
        assert!(
            text.contains("slipway_requests_total{service=\"api\",code=\"2xx\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("slipway_requests_total{service=\"api\",code=\"5xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("slipway_request_errors_total{service=\"api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("slipway_request_duration_seconds_count{service=\"api\"} 6"),
            "{text}"
        );
        // 1 ms and 2 ms fall at or under 2.5 ms? 1 ms is <= 1 ms within bucket precision.
        assert!(
            text.contains("slipway_request_duration_seconds_bucket{le=\"+Inf\",service=\"api\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("slipway_request_duration_seconds_bucket{le=\"0.5\",service=\"api\"} 5"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
