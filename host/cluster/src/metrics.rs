//! Every node's Prometheus endpoint (`GET /metrics`, the OpenMetrics text format): what
//! the node runs and how it is doing, read at scrape time from the counters the engine and
//! the cluster keep anyway (no second bookkeeping).
//!
//! - a worker: per job and operator, rows and batches in and out, busy seconds, bytes
//!   copied into and out of guests, failures; per region, checkpoints completed and
//!   aborted, the last checkpoint's duration and size, restarts; its tasks and how much
//!   of its lease is left;
//! - the coordinator: workers up and lost, jobs per state, placements and failovers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Something that adds its metrics to a scrape.
pub trait Source: Send + Sync + std::fmt::Debug + 'static {
    fn collect(&self, out: &mut Samples);
}

/// The samples of one scrape: `(name, help, kind, labels, value)`.
#[derive(Debug, Default)]
pub struct Samples {
    families: Vec<Family>,
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Samples {
    fn family(&mut self, name: &'static str, help: &'static str, counter: bool) -> &mut Family {
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            return &mut self.families[i];
        }
        self.families.push(Family { name, help, counter, samples: Vec::new() });
        let last = self.families.len() - 1;
        &mut self.families[last]
    }

    /// A counter sample (monotonic; `_total` is added to the name).
    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)], value: f64) {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.family(name, help, true).samples.push((labels, value));
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)], value: f64) {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.family(name, help, false).samples.push((labels, value));
    }
}

#[derive(Debug)]
struct Sources(Vec<Arc<dyn Source>>);

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut samples = Samples::default();
        for s in &self.0 {
            s.collect(&mut samples);
        }
        for family in samples.families {
            let kind =
                if family.counter { ConstCounter::new(0.0).metric_type() } else { ConstGauge::new(0.0).metric_type() };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in family.samples {
                let labels: Vec<(&str, String)> = labels;
                let encoder = metric.encode_family(&labels)?;
                if family.counter {
                    ConstCounter::new(value).encode(encoder)?;
                } else {
                    ConstGauge::new(value).encode(encoder)?;
                }
            }
        }
        Ok(())
    }
}

/// The node's registry: its sources, encoded at each scrape.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    pub fn new(sources: Vec<Arc<dyn Source>>) -> Self {
        let mut registry = Registry::with_prefix("flumen");
        registry.register_collector(Box::new(Sources(sources)));
        Self { registry: Arc::new(Mutex::new(registry)) }
    }

    /// The text a scrape returns.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Serves `GET /metrics` at `addr` until the process ends; returns the bound address.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let metrics = self.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move { Ok::<_, std::convert::Infallible>(respond(&metrics, &req)) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Ok(bound)
    }
}

fn respond(metrics: &Metrics, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
        (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.render())
    } else {
        (StatusCode::NOT_FOUND, "text/plain", "not found: GET /metrics\n".to_owned())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

/// A running job's counters, as a source: per operator and per region.
#[derive(Debug)]
pub struct JobSource {
    pub job: String,
    pub metrics: Arc<flumen_engine::JobMetrics>,
    /// The nodes this process runs (`None`: all of the job's).
    pub nodes: Option<Arc<std::collections::HashSet<String>>>,
}

impl JobSource {
    pub fn collect_into(&self, out: &mut Samples) {
        use std::sync::atomic::Ordering::Relaxed;
        let job = self.job.as_str();
        for (id, kind, m) in &self.metrics.nodes {
            if self.nodes.as_ref().is_some_and(|n| !n.contains(id.as_str())) {
                continue;
            }
            let kind = match kind {
                flumen_engine::NodeKind::Source => "source",
                flumen_engine::NodeKind::Operator => "operator",
                flumen_engine::NodeKind::Sink => "sink",
            };
            let labels = [("job", job), ("node", id.as_str()), ("kind", kind)];
            let n = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed) as f64;
            out.counter("rows_in", "Rows a node received.", &labels, n(&m.rows_in));
            out.counter("rows_out", "Rows a node emitted.", &labels, n(&m.rows_out));
            out.counter("batches_in", "Batches a node received.", &labels, n(&m.batches_in));
            out.counter("batches_out", "Batches a node emitted.", &labels, n(&m.batches_out));
            out.counter("busy_seconds", "Time a node spent in its own work.", &labels, n(&m.busy_ns) / 1e9);
            out.counter("guest_bytes_in", "Bytes copied into guest memory.", &labels, n(&m.guest_bytes_in));
            out.counter("guest_bytes_out", "Bytes copied out of guest memory.", &labels, n(&m.guest_bytes_out));
            out.counter("failures", "Failed guest calls.", &labels, n(&m.failures));
            out.counter("dead_lettered_rows", "Rows sent to a dead-letter sink.", &labels, n(&m.dead_lettered_rows));
            out.counter(
                "backpressure_seconds",
                "Time a node waited for room in a full output channel.",
                &labels,
                n(&m.backpressure_ns) / 1e9,
            );
        }
        // A model's counters are its process's (shared by every job using it), labelled with
        // each job that uses it.
        for m in self.metrics.models() {
            let labels = [("job", job), ("model", m.model.as_str())];
            out.counter("inference_calls", "Inference calls operators made.", &labels, m.calls as f64);
            out.counter("inference_rows", "Rows inferred.", &labels, m.rows as f64);
            out.counter(
                "inference_batches",
                "Batches the model ran (rows / batches: mean batch size).",
                &labels,
                m.batches as f64,
            );
            out.counter(
                "inference_queue_seconds",
                "Calls' time queued before their batch ran, summed.",
                &labels,
                m.queue_seconds,
            );
            out.gauge("inference_queue_max_seconds", "The longest a call waited.", &labels, m.queue_max_seconds);
            out.gauge("inference_queued_rows", "Rows waiting for a batch now.", &labels, m.queued_rows as f64);
        }
        for r in self.metrics.regions() {
            let s = r.snapshot();
            let labels = [("job", job), ("region", s.name.as_str())];
            out.counter("checkpoints_completed", "Checkpoints a region completed.", &labels, s.checkpoints as f64);
            out.counter("checkpoints_aborted", "Checkpoints a region aborted.", &labels, s.aborted as f64);
            out.counter("region_restarts", "Times a region restarted from a checkpoint.", &labels, s.restarts as f64);
            out.gauge(
                "checkpoint_last_duration_seconds",
                "The last checkpoint's time from trigger to commit.",
                &labels,
                s.last_duration.as_secs_f64(),
            );
            out.gauge("checkpoint_last_bytes", "Bytes the last checkpoint wrote.", &labels, s.last_bytes as f64);
            out.gauge("checkpoint_last_id", "The last completed checkpoint's id.", &labels, s.last_checkpoint as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Source for Fixed {
        fn collect(&self, out: &mut Samples) {
            out.gauge("worker_tasks", "Tasks running.", &[("worker", "w-1")], 2.0);
            out.counter("heartbeats", "Heartbeats acknowledged.", &[("worker", "w-1")], 7.0);
        }
    }

    #[tokio::test]
    async fn scrapes_return_the_openmetrics_text() {
        let metrics = Metrics::new(vec![Arc::new(Fixed)]);
        let text = metrics.render();
        assert!(text.contains("# TYPE flumen_worker_tasks gauge"), "{text}");
        assert!(text.contains("flumen_worker_tasks{worker=\"w-1\"} 2"), "{text}");
        assert!(text.contains("flumen_heartbeats_total{worker=\"w-1\"} 7"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let addr = metrics.serve("127.0.0.1:0".parse().expect("addr")).await.expect("serves");
        let body = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).expect("connects");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("writes");
            let mut body = String::new();
            s.read_to_string(&mut body).expect("reads");
            body
        })
        .await
        .expect("joins");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("flumen_heartbeats_total"), "{body}");
    }
}
