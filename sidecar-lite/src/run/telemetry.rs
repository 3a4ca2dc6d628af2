//! Tracing export: the tracer provider of `[tracing]`, and the pipeline that carries finished
//! spans to an OTLP collector without ever holding a request up.
//!
//! A span that ends is offered to a bounded queue (`queue_size` spans, and at most
//! [`MAX_QUEUED_BYTES`] of them); when the queue is full the span is dropped and counted, never
//! waited for. A thread of its own, with a runtime of its own, takes spans off the queue and
//! posts them in batches (`batch_size`, or whatever came within `export_interval` of a batch's
//! first span) over OTLP/HTTP with protobuf: encoding a batch never holds up the requests of a
//! worker, and a busy queue wakes the thread once a [`TICK`] (or once a batch, when a batch's
//! worth comes sooner), not once a span. While an export
//! is under way nothing else is sent, so a slow or dead collector fills the queue and costs
//! spans, not requests. A batch the collector does not take within `export_timeout` (retries
//! included) is dropped and counted too.
//!
//! | metric | what |
//! | --- | --- |
//! | `sidecar_spans_exported_total` | spans the collector accepted |
//! | `sidecar_spans_dropped_total{reason="queue-full"}` | spans dropped because the queue was full |
//! | `sidecar_spans_dropped_total{reason="export-failed"}` | spans in batches that failed or timed out |
//! | `sidecar_spans_dropped_total{reason="stopped"}` | spans that ended after the export stopped |

use crate::config::TracingConfig;
use opentelemetry::{Array, Context, InstrumentationScope, Value, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor},
};
use resilience_core::BoxError;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    sync::{Notify, mpsc, oneshot},
    time::{Instant, sleep_until},
};

/// How long spans gather while the queue is busy before the export thread takes them: one
/// wake-up of the thread a tick under load. Waiting on the queue instead would have every
/// span's worker wake the thread, a system call each.
const TICK: Duration = Duration::from_millis(20);

/// The running export of `[tracing]`: a tracer for the listeners, and the thread that sends
/// their spans. Stop it with [`Telemetry::shutdown`] so the last spans go out.
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Tells the export thread to send what is queued, by the instant it carries.
    stop: oneshot::Sender<Instant>,
    /// Closed when the export thread has sent the last spans and ended.
    done: oneshot::Receiver<()>,
    export_timeout: Duration,
}

impl Telemetry {
    /// Builds the exporter and starts the export thread.
    pub(crate) fn start(config: &TracingConfig) -> Result<Self, BoxError> {
        let endpoint = config
            .endpoint()
            .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.to_string())
            .with_timeout(config.export_timeout)
            .build()?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        exporter.set_resource(&resource);

        let (queue, spans) = mpsc::channel(config.queue_size);
        let queued = Arc::new(AtomicUsize::new(0));
        let batch_waits = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel();
        let (ended, done) = oneshot::channel::<()>();
        let batching = Batching {
            size: config.batch_size.min(config.queue_size).max(1),
            interval: config.export_interval,
            timeout: config.export_timeout,
        };
        let processor = QueueProcessor {
            queue,
            queued: queued.clone(),
            batch_waits: batch_waits.clone(),
            // A batch's worth waits in the queue; or half the queue, when a batch is more.
            batch_room: (config.queue_size - batching.size).max(config.queue_size / 2),
        };
        let queue = Queue {
            spans,
            queued,
            batch_waits,
        };
        // The runtime is built on the thread, which says whether it could: a runtime that
        // failed to start a thread would otherwise be dropped here, inside the caller's.
        let (built, started) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = built.send(Err(error));
                        return;
                    }
                };
                let _ = built.send(Ok(()));
                runtime.block_on(export_loop(queue, exporter, batching, stopped));
                drop(ended);
            })?;
        // A wait of the thread's start, once, when the sidecar starts.
        started
            .recv()
            .map_err(|_| "the OTLP export thread ended as it started")??;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder("sidecar-lite")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        tracing::info!(%endpoint, ratio = config.sampling_ratio, "exporting spans over OTLP/HTTP");
        Ok(Self {
            provider,
            tracer,
            stop,
            done,
            export_timeout: config.export_timeout,
        })
    }

    /// The tracer that the listeners start their spans with.
    #[must_use]
    pub(crate) fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Sends the spans still queued, waiting at most `export_timeout` for them, then stops.
    /// Spans that end later are dropped and counted.
    pub(crate) async fn shutdown(self) {
        let Self {
            provider,
            stop,
            done,
            export_timeout,
            ..
        } = self;
        let until = Instant::now() + export_timeout;
        let _ = stop.send(until);
        // The thread gives up on what is left at `until` too, and ends.
        if tokio::time::timeout_at(until, done).await.is_err() {
            tracing::warn!(
                ?export_timeout,
                "the last spans were not exported in time; dropping them"
            );
        }
        // Our processor's shutdown does not block: the queue is simply no longer read.
        let _ = provider.shutdown();
    }
}

/// How the export thread groups spans.
#[derive(Debug, Clone, Copy)]
struct Batching {
    size: usize,
    interval: Duration,
    timeout: Duration,
}

/// The most memory that finished spans may hold while they wait for export, whatever
/// `queue_size` says: spans are small (their attributes are cut to 1 KiB each), but a queue of
/// a million of them need not be.
const MAX_QUEUED_BYTES: usize = 32 << 20;

/// About what a finished span holds: its name, its attributes, events and links, and a fixed
/// part for its ids, times and status.
fn span_bytes(span: &SpanData) -> usize {
    const FIXED: usize = 256;
    let attributes: usize = span
        .attributes
        .iter()
        .map(|kv| kv.key.as_str().len() + value_bytes(&kv.value) + 16)
        .sum();
    FIXED + span.name.len() + attributes + (span.events.len() + span.links.len()) * FIXED
}

/// What an attribute's value holds beyond its place in the attribute, read without formatting
/// it: `Value::as_str` writes a number out as text, an allocation for every span that has one.
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Bool(_) | Value::I64(_) | Value::F64(_) => 0,
        Value::String(text) => text.as_str().len(),
        Value::Array(Array::Bool(values)) => values.len(),
        Value::Array(Array::I64(values)) => values.len() * size_of::<i64>(),
        Value::Array(Array::F64(values)) => values.len() * size_of::<f64>(),
        Value::Array(Array::String(values)) => values.iter().map(|v| v.as_str().len() + 16).sum(),
        // A kind of value newer than this code: as text, as it would be exported.
        other => other.as_str().len(),
    }
}

/// Offers each finished span to the bounded queue of the export thread; a full queue drops it.
#[derive(Debug)]
struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    /// Bytes of the spans in the queue; the export thread takes off what it exports.
    queued: Arc<AtomicUsize>,
    /// Wakes the export thread before its tick: a batch's worth of spans waits.
    batch_waits: Arc<Notify>,
    /// The room left in the queue when a batch's worth waits in it.
    batch_room: usize,
}

/// The export thread's end of the queue.
struct Queue {
    spans: mpsc::Receiver<SpanData>,
    queued: Arc<AtomicUsize>,
    batch_waits: Arc<Notify>,
}

impl Queue {
    /// Exports `batch`, taken off the queue, leaving it empty.
    async fn export<E: SpanExporter>(&self, export: &mut Export<E>, batch: &mut Vec<SpanData>) {
        let bytes: usize = batch.iter().map(span_bytes).sum();
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        export.send(std::mem::take(batch)).await;
    }
}

/// Counts spans dropped for `reason`. Registered at each drop rather than held: drops are
/// rare, and a series idle long enough to be expired by the exporter comes back with the next.
fn dropped(reason: &'static str, spans: u64) {
    metrics::counter!("sidecar_spans_dropped_total", "reason" => reason).increment(spans);
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let bytes = span_bytes(&span);
        if self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            dropped("queue-full", 1);
            return;
        }
        let reason = match self.queue.try_send(span) {
            Ok(()) => {
                if self.queue.capacity() <= self.batch_room {
                    self.batch_waits.notify_one();
                }
                return;
            }
            Err(mpsc::error::TrySendError::Full(_)) => "queue-full",
            Err(mpsc::error::TrySendError::Closed(_)) => "stopped",
        };
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        dropped(reason, 1);
    }

    /// Does not wait: spans go out on the export thread's schedule, or at
    /// [`Telemetry::shutdown`].
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Takes spans off the queue and exports them in batches until `stop` (which says by when the
/// last spans must be out) or until the provider is gone, then sends what is still queued and
/// returns.
async fn export_loop<E: SpanExporter>(
    mut queue: Queue,
    exporter: E,
    batching: Batching,
    mut stop: oneshot::Receiver<Instant>,
) {
    let mut export = Export::new(exporter, batching.timeout);
    let mut batch = Vec::with_capacity(batching.size);
    let until = loop {
        match gather(&mut queue, &mut batch, batching, &mut stop).await {
            Gathered::Batch => queue.export(&mut export, &mut batch).await,
            Gathered::Stop { until } => break until,
        }
    };
    let last = async {
        queue.spans.close();
        while let Some(span) = queue.spans.recv().await {
            batch.push(span);
            if batch.len() == batching.size {
                queue.export(&mut export, &mut batch).await;
            }
        }
        queue.export(&mut export, &mut batch).await;
    };
    match until {
        Some(until) => {
            let _ = tokio::time::timeout_at(until, last).await;
        }
        None => last.await,
    }
}

/// What [`gather`] ended with.
enum Gathered {
    /// A batch to export: full, or its first span has waited `export_interval`.
    Batch,
    /// Stop, with what is gathered still to send: by `until`, or when every handle on the
    /// thread has gone without a stop, in no hurry.
    Stop { until: Option<Instant> },
}

/// Gathers the next batch into `batch`. An idle queue is waited on, so that its first span
/// wakes the thread; while spans keep coming, the queue is only looked at once a [`TICK`] (or
/// when the processor says a batch's worth waits), so that the workers' sends wake nothing.
async fn gather(
    queue: &mut Queue,
    batch: &mut Vec<SpanData>,
    batching: Batching,
    stop: &mut oneshot::Receiver<Instant>,
) -> Gathered {
    let mut due = None;
    // The spans gathered at the last look: none new since means the queue went quiet.
    let mut looked = 0;
    loop {
        let quiet = batch.len() == looked;
        looked = batch.len();
        let now = Instant::now();
        let wake = due.map_or(now + TICK, |due: Instant| (now + TICK).min(due));
        tokio::select! {
            biased;
            until = &mut *stop => return Gathered::Stop { until: until.ok() },
            // Quiet (or idle): the next span wakes the thread.
            received = queue.spans.recv_many(batch, batching.size - looked), if quiet => {
                if received == 0 {
                    // Every sender is gone: the provider was dropped.
                    return Gathered::Stop { until: None };
                }
            }
            () = queue.batch_waits.notified(), if !quiet => {}
            // A quiet batch under way still goes when its first span's time is up.
            () = sleep_until(if quiet { due.unwrap_or(wake) } else { wake }),
                if !quiet || due.is_some() => {}
        }
        let first_due = *due.get_or_insert_with(|| Instant::now() + batching.interval);
        while batch.len() < batching.size
            && let Ok(span) = queue.spans.try_recv()
        {
            batch.push(span);
        }
        if batch.len() == batching.size || Instant::now() >= first_due {
            return Gathered::Batch;
        }
    }
}

/// The exporter, and whether its last export failed.
struct Export<E> {
    exporter: E,
    timeout: Duration,
    failing: bool,
}

impl<E: SpanExporter> Export<E> {
    fn new(exporter: E, timeout: Duration) -> Self {
        Self {
            exporter,
            timeout,
            failing: false,
        }
    }

    async fn send(&mut self, batch: Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let outcome = match tokio::time::timeout(self.timeout, self.exporter.export(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match outcome {
            Ok(()) => {
                metrics::counter!("sidecar_spans_exported_total").increment(count);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("span export works again");
                }
            }
            Err(error) => {
                dropped("export-failed", count);
                // Once per outage at warn, so a dead collector does not flood the log.
                if std::mem::replace(&mut self.failing, true) {
                    tracing::debug!(%error, spans = count, "span export failed");
                } else {
                    tracing::warn!(%error, spans = count, "span export failed; dropping spans until it works again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use opentelemetry::trace::{Span as _, Tracer as _};
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::TcpListener,
        sync::mpsc as std_mpsc,
    };

    /// A stand-in collector on a thread of its own: answers each export with `200` and tells
    /// `got` how many bytes of spans it took.
    fn collector() -> (String, std_mpsc::Receiver<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let (got, exports) = std_mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("a socket"));
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().expect("a length");
                    }
                    if line == "\r\n" {
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).expect("the body");
                        (&stream)
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .expect("an answer");
                        // The next request on the connection says its own length.
                        if got.send(std::mem::take(&mut length)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        (url, exports)
    }

    #[test]
    fn a_value_is_sized_by_what_it_holds_not_by_its_text() {
        assert_eq!(value_bytes(&Value::I64(8080)), 0, "held in its place");
        assert_eq!(value_bytes(&Value::F64(0.25)), 0);
        assert_eq!(value_bytes(&Value::Bool(true)), 0);
        assert_eq!(value_bytes(&Value::from("/orders/42")), 10);
        assert_eq!(value_bytes(&Value::Array(Array::I64(vec![1, 2, 3]))), 24);
        assert_eq!(
            value_bytes(&Value::Array(Array::String(vec!["ab".into(), "c".into()]))),
            3 + 2 * 16
        );
    }

    /// The export has a thread of its own: spans go out while the runtime that started it,
    /// and that ends the spans (a worker's, in the sidecar), is busy and never yields.
    #[tokio::test(flavor = "current_thread")]
    async fn spans_are_exported_while_the_worker_never_yields() {
        let (url, exports) = collector();
        let config = Config::parse(&format!(
            "[tracing]\notlp_endpoint = \"{url}\"\nexport_interval = \"1ms\"\n"
        ))
        .expect("a config");
        let telemetry = Telemetry::start(config.tracing.as_ref().unwrap()).expect("started");
        telemetry.tracer().start("request").end();
        // Blocks this runtime's only thread until the collector has the span.
        let bytes = exports
            .recv_timeout(Duration::from_secs(30))
            .expect("the span is exported without this runtime's help");
        assert!(bytes > 0, "an export with the span in it");
        telemetry.shutdown().await;
    }
}
